"""tfmatch.train end to end on the test-only method: outputs, resume, partial restore, NaN guard, errors."""

import glob
import os
import re

import numpy as np
import pytest

from tests.runtime._cli import logged_losses, read_group, run_cli, train_args


def _summary_tags(model_dir):
    import tensorflow as tf

    tags = set()
    for path in glob.glob(os.path.join(model_dir, "train", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.add(value.tag)
    return tags


def test_train_writes_config_checkpoints_summaries_then_resumes(tmp_path, repo_root, subprocess_env):
    model_dir = tmp_path / "run"
    first = run_cli("tfmatch.train", train_args(model_dir, "train.max_steps = 10"), subprocess_env, repo_root)
    losses = logged_losses(first.stdout)
    assert sorted(losses) == [5, 10] and losses[10] < losses[5]
    assert (model_dir / "operative_config.gin").read_text().count("train.max_steps = 10") == 1
    assert os.path.isfile(model_dir / "checkpoints" / "ckpt-00000010.h5")
    tags = _summary_tags(model_dir)
    assert {"loss", "descriptor_loss", "learning_rate", "steps_per_second", "matches", "operative_config"} <= tags

    # The same command with a larger budget resumes at step 10 with the optimizer state (Adam's step counter).
    second = run_cli("tfmatch.train", train_args(model_dir, "train.max_steps = 20"), subprocess_env, repo_root)
    assert "resumed" in second.stdout and "at step 10" in second.stdout
    assert sorted(logged_losses(second.stdout)) == [15, 20]
    optimizer = read_group(model_dir / "checkpoints" / "ckpt-00000020.h5", "optimizer")
    iterations = [v for v in optimizer.values() if np.ndim(v) == 0 and np.issubdtype(np.asarray(v).dtype, np.integer)]
    assert 20 in [int(v) for v in iterations]

    # Nothing left to do: a third run returns without training.
    third = run_cli("tfmatch.train", train_args(model_dir, "train.max_steps = 20"), subprocess_env, repo_root)
    assert "already trained to step 20" in third.stdout


def test_init_checkpoint_partial_restore_reports_unmatched(tmp_path, repo_root, subprocess_env):
    base = tmp_path / "base"
    run_cli("tfmatch.train", train_args(base, "train.max_steps = 10"), subprocess_env, repo_root)
    wider = tmp_path / "wider"
    proc = run_cli("tfmatch.train", train_args(
        wider, "train.max_steps = 10", f"train.init_checkpoint = '{base}'", "ToyDescriptor.descriptor_dim = 32"),
        subprocess_env, repo_root)
    assert "initialised from" in proc.stdout and "shape mismatch" in proc.stdout and "conv1/kernel" in proc.stdout
    # conv0 came from the base run unchanged before training: compare the base weights with a zero-step restore.
    restored = tmp_path / "restored"
    run_cli("tfmatch.train", train_args(restored, "train.max_steps = 1", "train.steps_per_epoch = 1",
                                        f"train.init_checkpoint = '{base}'", "keras.optimizers.Adam.learning_rate = 0.0"),
            subprocess_env, repo_root)
    got = read_group(restored / "checkpoints" / "ckpt-00000001.h5")
    want = read_group(base / "checkpoints" / "ckpt-00000010.h5")
    np.testing.assert_array_equal(got["conv0/kernel"], want["conv0/kernel"])


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, repo_root, subprocess_env):
    model_dir = tmp_path / "nan"
    proc = run_cli("tfmatch.train", train_args(model_dir, "train.max_steps = 20", "ToyDescriptor.nan_at_step = 13",
                                                         "train.nan_check_every = 1"),
                   subprocess_env, repo_root, check=False)
    assert proc.returncode == 3
    assert "nan at step 13" in proc.stderr and "last good checkpoint" in proc.stderr
    saved = sorted(os.listdir(model_dir / "checkpoints"))
    assert saved == ["ckpt-00000010.h5"]
    assert all(np.all(np.isfinite(v)) for v in read_group(model_dir / "checkpoints" / saved[0]).values())


def test_sparse_nan_checks_still_guard_every_checkpoint(tmp_path, repo_root, subprocess_env):
    # Checked every 7 steps: the NaN from step 9 is missed at step 7, caught at the end of the epoch (step 10)
    # before the step-10 checkpoint is written.
    model_dir = tmp_path / "nan_sparse"
    proc = run_cli("tfmatch.train", train_args(model_dir, "train.max_steps = 20", "ToyDescriptor.nan_at_step = 9",
                                               "train.nan_check_every = 7"), subprocess_env, repo_root, check=False)
    assert proc.returncode == 3 and "at step 10" in proc.stderr
    assert not (model_dir / "checkpoints").exists()


def test_steps_per_execution_keeps_steps_logs_checkpoints_and_nan_guard(tmp_path, repo_root, subprocess_env):
    # 10 steps per epoch, logs every 5: steps_per_execution 4 is reduced to 1, 5 stays 5 (two calls per epoch).
    model_dir = tmp_path / "k5"
    proc = run_cli("tfmatch.train", train_args(model_dir, "train.max_steps = 20", "train.steps_per_execution = 5"),
                   subprocess_env, repo_root)
    assert sorted(logged_losses(proc.stdout)) == [5, 10, 15, 20]
    assert sorted(os.listdir(model_dir / "checkpoints")) == ["ckpt-00000010.h5", "ckpt-00000020.h5"]
    optimizer = read_group(model_dir / "checkpoints" / "ckpt-00000020.h5", "optimizer")
    assert 20 in [int(v) for v in optimizer.values() if np.ndim(v) == 0 and np.issubdtype(np.asarray(v).dtype,
                                                                                              np.integer)]
    nan_dir = tmp_path / "k5nan"
    proc = run_cli("tfmatch.train", train_args(nan_dir, "train.max_steps = 20", "train.steps_per_execution = 5",
                                               "ToyDescriptor.nan_at_step = 13", "train.nan_check_every = 1"),
                   subprocess_env, repo_root, check=False)
    assert proc.returncode == 3 and "at step 15" in proc.stderr  # found at the end of the execution holding it
    assert sorted(os.listdir(nan_dir / "checkpoints")) == ["ckpt-00000010.h5"]
    odd = run_cli("tfmatch.train", train_args(tmp_path / "k4", "train.max_steps = 10", "train.steps_per_execution = 4"),
                  subprocess_env, repo_root)
    assert sorted(logged_losses(odd.stdout)) == [5, 10]


def test_misspelled_binding_exits_before_any_work(tmp_path, repo_root, subprocess_env):
    model_dir = tmp_path / "typo"
    proc = run_cli("tfmatch.train", train_args(model_dir, "train.max_stepz = 3"), subprocess_env, repo_root,
                   check=False)
    assert proc.returncode == 2
    assert "--gin_bindings 'train.max_stepz = 3'" in proc.stderr
    assert not model_dir.exists()


def test_jax_device_loop_equals_keras_steps(tmp_path, repo_root, subprocess_env):
    """On JAX (one device) k steps run as one compiled loop over k stacked batches: the same losses, weights and
    optimizer state as Keras' k separate calls, and the NaN guard still names the execution's last step."""
    jax_env = dict(subprocess_env, KERAS_BACKEND="jax")
    runs = {}
    for device_loop in (True, False):
        model_dir = tmp_path / f"loop_{device_loop}"
        proc = run_cli("tfmatch.train", train_args(model_dir, "train.steps_per_execution = 5",
                                                   f"train.device_loop = {device_loop}"), jax_env, repo_root)
        assert ("device loop: 5 steps per compiled call" in proc.stderr) == device_loop
        if device_loop:  # 4 calls; within each epoch the second starts from the steps dispatched ahead
            reused = re.search(r"device loop: 4 calls, (\d) started from steps dispatched ahead", proc.stdout)
            assert reused and int(reused.group(1)) >= 2, proc.stdout[-2000:]
        runs[device_loop] = (logged_losses(proc.stdout), model_dir / "checkpoints" / "ckpt-00000020.h5")
    assert sorted(runs[True][0]) == [5, 10, 15, 20]
    for step, loss in runs[False][0].items():
        assert runs[True][0][step] == pytest.approx(loss, rel=1e-5, abs=1e-6)
    for group in ("model", "optimizer"):
        loop, keras_steps = read_group(runs[True][1], group), read_group(runs[False][1], group)
        assert sorted(loop) == sorted(keras_steps)
        for name, value in keras_steps.items():
            np.testing.assert_allclose(loop[name], value, rtol=1e-5, atol=1e-6, err_msg=f"{group}/{name}")
    nan_dir = tmp_path / "loop_nan"
    proc = run_cli("tfmatch.train", train_args(nan_dir, "train.steps_per_execution = 5", "ToyDescriptor.nan_at_step = 13",
                                               "train.nan_check_every = 1"), jax_env, repo_root, check=False)
    assert proc.returncode == 3 and "at step 15" in proc.stderr
    assert sorted(os.listdir(nan_dir / "checkpoints")) == ["ckpt-00000010.h5"]


@pytest.mark.parametrize("backend,steps_per_execution", [("tensorflow", 1), ("jax", 5)])  # jax: the device loop
def test_ctrl_c_stops_at_a_step_end_and_keeps_the_epoch_checkpoints(tmp_path, repo_root, subprocess_env, backend,
                                                                    steps_per_execution):
    """SIGINT during training: exit status 130 with the step and the checkpoint to resume from, and no checkpoint
    written mid-epoch. (On JAX the interrupt was once lost inside the wait for the device, and training went on.)"""
    import signal
    import subprocess
    import sys
    import threading

    model_dir = tmp_path / "run"
    args = train_args(model_dir, "train.max_steps = 100000", "train.steps_per_epoch = 10", "train.log_every = 5",
                      f"train.steps_per_execution = {steps_per_execution}")
    proc = subprocess.Popen([sys.executable, "-m", "tfmatch.train", *args], cwd=repo_root,
                            env=dict(subprocess_env, KERAS_BACKEND=backend), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(200, proc.kill)  # a run that never logs step 15 ends here, and the test fails
    watchdog.start()
    try:
        for line in proc.stdout:  # training has run past the first epoch's checkpoint
            if line.startswith("step 15/"):
                break
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
        proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    message = re.search(r"interrupted at step (\d+); the same command resumes from \S+ckpt-(\d+)\.h5", stderr)
    stopped, resume_from = int(message.group(1)), int(message.group(2))
    saved = sorted(int(name[5:13]) for name in os.listdir(model_dir / "checkpoints"))
    assert saved[-1] == resume_from and all(step % 10 == 0 for step in saved)
    assert 15 <= stopped < 100000 and stopped % steps_per_execution == 0 and stopped - resume_from < 10


def test_ctrl_c_in_an_epochs_last_step_stops_after_its_checkpoint():
    import keras

    from tfmatch.runtime.callbacks import InterruptAtStepEnd, StepCounter

    counter = StepCounter(0)
    interrupt = InterruptAtStepEnd(counter)
    interrupt.set_params({"steps": 10})
    counter.on_epoch_begin(0)
    for batch in (4, 9):
        counter.on_train_batch_end(batch)
        interrupt.requested = batch == 9  # Ctrl-C during the epoch's last call
        interrupt.on_train_batch_end(batch)  # no stop yet: the epoch's checkpoint comes first
    with pytest.raises(KeyboardInterrupt, match="interrupted at step 10"):
        interrupt.on_epoch_end(0)
    interrupt.requested = True
    counter.on_epoch_begin(1)
    counter.on_train_batch_end(4)
    with pytest.raises(KeyboardInterrupt, match="interrupted at step 15"):
        interrupt.on_train_batch_end(4)
    assert isinstance(interrupt, keras.callbacks.Callback)
