"""Distribution: MirroredStrategy on two logical CPUs equals one device; two workers on loopback stay in sync."""

import json
import subprocess
import sys

import numpy as np

from tests.runtime._cli import free_port, logged_losses, max_abs_diff, read_group, run_cli, train_args

ONE_STEP = ("train.max_steps = 2", "train.steps_per_epoch = 2", "train.log_every = 1")


def test_mirrored_on_two_logical_cpus_equals_one_device(tmp_path, repo_root, subprocess_env):
    results = {}
    for strategy in ("mirrored", "one_device"):
        model_dir = tmp_path / strategy
        proc = run_cli("tfmatch.train", ["--logical_cpus", "2"] + train_args(
            model_dir, f"train.strategy = '{strategy}'", *ONE_STEP), subprocess_env, repo_root)
        assert f"({strategy}, {2 if strategy == 'mirrored' else 1} replica(s)" in proc.stdout
        results[strategy] = (logged_losses(proc.stdout), read_group(model_dir / "checkpoints" / "ckpt-00000002.h5"))
    (loss_m, weights_m), (loss_1, weights_1) = results["mirrored"], results["one_device"]
    np.testing.assert_allclose([loss_m[1], loss_m[2]], [loss_1[1], loss_1[2]], rtol=1e-5)
    assert max_abs_diff(weights_m, weights_1) < 1e-5
    assert loss_1[2] < loss_1[1]  # the weights did move: not a comparison of two untouched initialisations


def test_two_workers_on_loopback_end_with_identical_weights(tmp_path, repo_root, subprocess_env):
    ports = [free_port(), free_port()]
    model_dir = tmp_path / "multi"
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": [f"localhost:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
        env = dict(subprocess_env, TF_CONFIG=json.dumps(tf_config))
        args = train_args(model_dir, "train.strategy = 'multi_worker'", "train.max_steps = 4",
                          "train.steps_per_epoch = 4", "train.log_every = 2")
        procs.append(subprocess.Popen([sys.executable, "-m", "tfmatch.train", *args], cwd=repo_root, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-4000:]
    assert "2 replicas" in outputs[0][0]
    chief = read_group(model_dir / "checkpoints" / "ckpt-00000004.h5")
    worker = read_group(model_dir / "workers" / "worker-1" / "checkpoints" / "ckpt-00000004.h5")
    assert max_abs_diff(chief, worker) == 0.0
    losses = [logged_losses(out) for out, _ in outputs]
    assert losses[0] == losses[1] and losses[0][4] < losses[0][2]
