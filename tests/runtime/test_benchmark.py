"""tfmatch.benchmark prints one JSON line with the documented keys, on TensorFlow and JAX (numbers not timed)."""

import json

import pytest

from tests.runtime._cli import run_cli

KEYS = {"method", "mode", "backend", "device", "batch", "steps", "ms_per_step", "peak_device_memory_mb",
        "peak_host_rss_mb", "date"}


def _record(stdout):
    lines = [l for l in stdout.splitlines() if l.startswith("{")]
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


@pytest.mark.parametrize("backend, mode, rate", [("tensorflow", "infer", "images_per_second"),
                                                 ("tensorflow", "train", "pairs_per_second"),
                                                 ("jax", "infer", "images_per_second")])
def test_benchmark_json_line(repo_root, subprocess_env, backend, mode, rate):
    env = dict(subprocess_env, KERAS_BACKEND=backend)
    size = ["--height", "32"] + (["--width", "48"] if mode == "infer" else [])
    proc = run_cli("tfmatch.benchmark", ["--gin_file", "tests/support/toy.gin", "--mode", mode, "--batch", "2",
                                         *size, "--steps", "3", "--warmup", "1"], env, repo_root)
    record = _record(proc.stdout)
    assert KEYS <= set(record) and record["backend"] == backend and record["mode"] == mode
    assert record["method"] == "ToyDescriptor" and record[rate] > 0
    if mode == "infer":  # compute alone, and with host transfers
        assert record["images_per_second_with_transfers"] > 0


def test_benchmark_data_mode(repo_root, subprocess_env):
    proc = run_cli("tfmatch.benchmark", ["--gin_file", "tests/support/toy.gin", "--mode", "data", "--batch", "4",
                                         "--steps", "3"], subprocess_env, repo_root)
    record = _record(proc.stdout)
    assert record["method"] == "toy_pairs_dataset" and record["samples_per_second"] > 0
