"""Helpers for running the CLIs in subprocesses (fresh TensorFlow state per run)."""

import socket
import subprocess
import sys

import h5py
import numpy as np

TOY = "tests/support/toy.gin"


def run_cli(module, args, env, cwd, timeout=240, check=True, extra_env=None):
    full_env = dict(env, **(extra_env or {}))
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def train_args(model_dir, *bindings, gin_files=(TOY,)):
    args = []
    for f in gin_files:
        args += ["--gin_file", f]
    args += ["--model_dir", str(model_dir)]
    for b in bindings:
        args += ["--gin_bindings", b]
    return args


def read_group(path, group="model"):
    out = {}
    with h5py.File(path, "r") as f:
        f[group].visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def logged_losses(stdout):
    """``{step: loss}`` from the plain log lines."""
    losses = {}
    for line in stdout.splitlines():
        if line.startswith("step "):
            fields = line.split()
            step = int(fields[1].split("/")[0])
            losses[step] = float(fields[fields.index("loss") + 1])
    return losses


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def max_abs_diff(a, b):
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
