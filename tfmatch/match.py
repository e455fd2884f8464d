"""Match the features of image pairs into an h5 file (``matches0``, ``matching_scores0`` per pair).

    python -m tfmatch.match --features F.h5 --pairs PAIRS.txt --out M.h5 [--matcher mnn|ratio|S] [--ratio 0.8]

PAIRS.txt: ``name0 name1`` per line (names as in F.h5). ``--matcher``: mutual nearest neighbour, Lowe's ratio
test with the mutual check, or a matcher SavedModel directory. Resumable; another configuration is refused
unless ``--overwrite``.
"""

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("features", None, "h5 file written by tfmatch.extract.")
flags.DEFINE_string("pairs", None, "Text file, two image names a line.")
flags.DEFINE_string("out", None, "Output h5 file.")
flags.DEFINE_string("matcher", "mnn", "'mnn', 'ratio' or a matcher SavedModel directory.")
flags.DEFINE_float("ratio", 0.8, "Ratio of the ratio test.")
flags.DEFINE_boolean("overwrite", False, "Replace an output made with another configuration.")
flags.DEFINE_boolean("progress", True, "Show a progress bar.")
flags.mark_flags_as_required(["features", "pairs", "out"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import os

    from tfmatch.eval import io, pipeline
    from tfmatch.eval.matchers import make_matcher

    if not os.path.isfile(FLAGS.features):
        raise io.EvalInputError(f"{FLAGS.features}: features file not found")
    pairs = io.read_pairs(FLAGS.pairs, with_gt=False)
    computed = pipeline.match_features(FLAGS.features, pairs, make_matcher(FLAGS.matcher, FLAGS.ratio), FLAGS.out,
                                       {"matcher": FLAGS.matcher, "ratio": FLAGS.ratio}, FLAGS.overwrite,
                                       FLAGS.progress)
    print(f"{FLAGS.out}: {computed} pairs matched, {len(pairs) - computed} already there")


if __name__ == "__main__":
    app.run(main)
