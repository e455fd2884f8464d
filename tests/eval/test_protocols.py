"""End-to-end tests of the harness: demo set, HPatches protocol, caches and refusals, CLIs, bad input."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from data_tools.make_hpatches_demo import make_demo
from tfmatch.eval import hpatches, io, pipeline
from tfmatch.eval.extractors import make_extractor


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo(tmp_path_factory.mktemp("demo") / "hpatches", seed=0, num_sequences=2, size=200)


def test_demo_set_layout_and_resume(demo):
    sequences = io.read_hpatches(demo)
    assert [s.name for s in sequences] == ["i_astronaut", "v_astronaut"]
    assert (demo / ".complete").is_file()
    np.testing.assert_allclose(sequences[0].homographies[3], np.eye(3))
    assert np.abs(sequences[1].homographies[4] - np.eye(3)).max() > 0.01
    assert make_demo(demo, seed=0, num_sequences=2, size=200) == demo  # complete: kept
    with pytest.raises(FileExistsError, match="regenerate"):
        make_demo(demo, seed=1, num_sequences=2, size=200)


def test_sift_on_demo_set_rises_with_threshold_and_refuses_another_config(demo, tmp_path):
    out = tmp_path / "out"
    summary = hpatches.evaluate_hpatches(demo, make_extractor(method="sift", max_keypoints=500), out,
                                         hpatches.HPatchesProtocol(max_keypoints=500), progress=False)
    assert tuple(summary) == hpatches.SUMMARY_KEYS
    assert json.loads((out / "summary.json").read_text()) == summary
    curve = [summary["mma"][str(t)] for t in range(1, 11)]
    assert all(b >= a for a, b in zip(curve, curve[1:])) and curve[-1] > curve[0]
    assert curve[2] > 0.6 and summary["homography_accuracy"]["5"] > 0.5
    assert set(summary["mma_i"]) == set(summary["mma_v"]) == {str(t) for t in range(1, 11)}
    assert 0 < summary["num_matches"] <= summary["num_keypoints"] <= 500
    assert (out / "mma.png").stat().st_size > 0
    assert len(list((out / "sift" / "matches").glob("*.png"))) == 5
    with h5py.File(out / "sift" / "features.h5", "r") as h5:  # hloc layout
        group = h5["v_astronaut/1.png"]
        assert group["descriptors"].shape == (128, group["keypoints"].shape[0])
        assert list(group["image_size"][()]) == [200, 200]
    # Another configuration into the same OUT is refused; --overwrite recomputes.
    other = make_extractor(method="sift", max_keypoints=300)
    with pytest.raises(pipeline.CacheConflictError, match="max_keypoints"):
        hpatches.evaluate_hpatches(demo, other, out, hpatches.HPatchesProtocol(max_keypoints=300), progress=False)
    again = hpatches.evaluate_hpatches(demo, other, out, hpatches.HPatchesProtocol(max_keypoints=300),
                                       overwrite=True, progress=False, num_match_images=0)
    assert again["num_keypoints"] <= 300


def test_bad_input_names_the_file_and_line(tmp_path, demo):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(demo / "v_astronaut", data / "v_astronaut")
    (data / "v_astronaut" / "H_1_4").unlink()
    with pytest.raises(io.EvalInputError, match=r"v_astronaut/H_1_4: homography file not found"):
        io.read_hpatches(data)
    (data / "v_astronaut" / "H_1_4").write_text("1 0 0\n0 1 0\n")
    with pytest.raises(io.EvalInputError, match=r"H_1_4: expected 9 numbers"):
        io.read_hpatches(data)
    (data / "v_astronaut" / "H_1_4").write_text("1 0 0\n0 1 0\n0 0 1\n")
    (data / "v_astronaut" / "3.png").write_bytes(b"not a png")
    with pytest.raises(io.EvalInputError, match=r"3.png: cannot decode"):
        hpatches.evaluate_hpatches(data, make_extractor(method="orb", max_keypoints=100), tmp_path / "out",
                                   progress=False)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("# comment\n" + " ".join(["a", "b", "0", "0"] + ["1"] * 34) + "\n" + "a b 0 0 1 2 3\n")
    with pytest.raises(io.EvalInputError, match=r"pairs.txt:3: expected 38 fields .* found 7"):
        io.read_pairs(pairs)
    with pytest.raises(io.EvalInputError, match=r"pairs.txt:2: expected 2 fields"):
        io.read_pairs(pairs, with_gt=False)


def _run(args, env, cwd):
    result = subprocess.run([sys.executable, "-m", *args], env=env, cwd=cwd, capture_output=True, text=True,
                            timeout=120)
    return result


def test_clis_extract_match_evaluate(demo, tmp_path, subprocess_env, repo_root):
    features, matches = tmp_path / "f.h5", tmp_path / "m.h5"
    result = _run(["tfmatch.extract", "--method", "orb", "--images", str(demo / "v_astronaut"), "--out",
                   str(features), "--max_keypoints", "200", "--resize", "100", "--noprogress"], subprocess_env,
                  repo_root)
    assert result.returncode == 0, result.stderr
    with h5py.File(features, "r") as h5:
        assert sorted(h5) == [f"{k}.png" for k in range(1, 7)]
        keypoints = h5["1.png/keypoints"][()]
        assert len(keypoints) <= 200 and keypoints.max() > 100  # stored in original (200 px) pixels
    (tmp_path / "pairs.txt").write_text("1.png 2.png\n1.png 3.png\n")
    result = _run(["tfmatch.match", "--features", str(features), "--pairs", str(tmp_path / "pairs.txt"), "--out",
                   str(matches), "--matcher", "ratio", "--noprogress"], subprocess_env, repo_root)
    assert result.returncode == 0, result.stderr
    with h5py.File(matches, "r") as h5:
        m = h5["1.png/2.png/matches0"][()]
        assert m.shape == (len(keypoints),) and (m >= 0).sum() > 10
    # Resumable: a second run extracts nothing.
    result = _run(["tfmatch.extract", "--method", "orb", "--images", str(demo / "v_astronaut"), "--out",
                   str(features), "--max_keypoints", "200", "--resize", "100", "--noprogress"], subprocess_env,
                  repo_root)
    assert "0 images extracted, 6 already there" in result.stdout
    result = _run(["tfmatch.evaluate", "hpatches", "--data", str(demo), "--method", "orb", "--out",
                   str(tmp_path / "ev"), "--max_keypoints", "300", "--noprogress"], subprocess_env, repo_root)
    assert result.returncode == 0, result.stderr
    assert set(json.loads((tmp_path / "ev" / "summary.json").read_text())) == set(hpatches.SUMMARY_KEYS)
    result = _run(["tfmatch.evaluate", "hpatches", "--data", str(demo), "--method", "orb", "--out",
                   str(tmp_path / "ev"), "--max_keypoints", "100", "--noprogress"], subprocess_env, repo_root)
    assert result.returncode != 0 and "--overwrite" in result.stderr
