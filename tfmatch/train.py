"""Trains a method: ``python -m tfmatch.train --gin_file F [--gin_file G] [--gin_bindings 'a.b = 1'] --model_dir D``.

Rerunning the same command resumes from the last checkpoint in D. Ctrl-C stops at the next step end (exit status
130); checkpoints are only written at epoch ends, so the rerun starts from the last one. The configuration is parsed
before any work starts, so a misspelled binding fails at once with the file (or --gin_bindings entry) it came from.
"""

import os
import sys

import gin
from absl import app, flags, logging

from tfmatch import config

config.add_gin_flags()
flags.DEFINE_string("model_dir", None, "run directory: checkpoints, TensorBoard logs, operative_config.gin")
flags.DEFINE_integer("logical_cpus", 0, "split the CPU into this many logical devices (tests of 'mirrored' on CPU)")
flags.mark_flag_as_required("model_dir")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if FLAGS.logical_cpus:
        from tfmatch.runtime.strategy import configure_logical_cpus

        configure_logical_cpus(FLAGS.logical_cpus)
    try:
        config.parse(FLAGS.gin_file, FLAGS.gin_bindings, model_dir=FLAGS.model_dir)
    except config.ConfigError as err:
        print(f"tfmatch.train: configuration error: {err}", file=sys.stderr)
        sys.exit(2)
    from tfmatch.runtime import trainer
    from tfmatch.runtime.callbacks import NonFiniteLossError

    try:
        trainer.train(FLAGS.model_dir)
    except NonFiniteLossError as err:
        logging.error("%s", err)
        print(f"tfmatch.train: {err}", file=sys.stderr)
        sys.exit(3)
    except KeyboardInterrupt as err:  # Ctrl-C: stopped at a step end (runtime/callbacks.py: InterruptAtStepEnd)
        print(f"tfmatch.train: {err or 'interrupted'}", file=sys.stderr)
        sys.exit(130)
    if gin.query_parameter("train.strategy") == "multi_worker":
        # The collective runtime keeps a finished worker waiting for its peers' servers for many seconds.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    app.run(main)
