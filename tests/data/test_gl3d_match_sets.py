"""data_tools.gl3d_match_sets: record format, filters, resume after a kill, locking, skipped scenes, bad input."""

import fcntl
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from data_tools import gl3d_match_sets as tool
from tests.data.conftest import GL3D_NUM_CORR
from tfmatch.data import gl3d_io as io


def _run_cli(root, env, *args):
    cmd = [sys.executable, "-m", "data_tools.gl3d_match_sets", f"--gl3d={root}", "--split=gl3d",
           f"--num_corr={GL3D_NUM_CORR}", "--noprogress", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def _match_set_tree(root):
    """{relative path: bytes} of every file under data/*/match_sets plus the split marker."""
    files = {}
    for pid in sorted(os.listdir(os.path.join(root, "data"))):
        folder = os.path.join(root, "data", pid, "match_sets")
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            with open(os.path.join(folder, name), "rb") as f:
                files[f"{pid}/{name}"] = f.read()
    marker = io.split_marker_path(root, "gl3d")
    if os.path.exists(marker):
        with open(marker, "rb") as f:
            files["split_marker"] = f.read()
    return files


def test_match_sets_follow_the_record_layout_and_filters(gl3d_root):
    marker = io.read_marker(io.split_marker_path(gl3d_root, "gl3d"))
    assert marker["num_corr"] == GL3D_NUM_CORR and marker["record_bytes"] == io.match_set_bytes(GL3D_NUM_CORR)
    lists = io.read_split_lists(gl3d_root, "gl3d")
    total = 0
    for scene in lists.scenes:
        folder = os.path.join(gl3d_root, "data", scene.pid, "match_sets")
        scene_marker = io.read_marker(os.path.join(folder, ".complete"))
        names = sorted(n for n in os.listdir(folder) if n.endswith(".match_set"))
        assert scene_marker["num_match_sets"] == len(names) > 0
        assert not [n for n in os.listdir(folder) if ".tmp" in n]
        cams = io.read_cameras(os.path.join(gl3d_root, "data", scene.pid, "geolabel", "cameras.txt"))
        records = io.read_corr(os.path.join(gl3d_root, "data", scene.pid, "geolabel", "corr.bin"))
        for name in names:
            k, rot, orientation = io.parse_match_set_name(name)
            assert rot >= 3
            m = io.read_match_set(os.path.join(folder, name), GL3D_NUM_CORR)
            rec = records[k]
            assert (m["index0"], m["index1"]) == (scene.start + rec.idx0, scene.start + rec.idx1)
            assert m["num_inliers"] == min(len(rec.corr), GL3D_NUM_CORR)
            assert rot == int(io.rotation_angle_deg(cams[rec.idx0].R, cams[rec.idx1].R))
            # Inlier rows are rows of corr.bin (subsampled when there are more), padding rows are not matches.
            pairs = {tuple(r) for r in np.concatenate([rec.corr[:, :6], rec.corr[:, 6:12]], 1).tolist()}
            rows = np.concatenate([m["kpt_affine0"], m["kpt_affine1"]], 1)
            n = m["num_inliers"]
            assert all(tuple(r) in pairs for r in rows[:n].tolist())
            assert np.all(m["geo_sim"][n:] == 0) and np.all(m["geo_sim"][:n] > 0)
            np.testing.assert_allclose(m["R_0to1"], cams[rec.idx1].R @ cams[rec.idx0].R.T, atol=1e-5)
            total += 1
    assert total == marker["num_match_sets"]


def test_filters_rotation_and_keypoint_count(gl3d_synthetic_root, gl3d_copy):
    root = gl3d_copy(gl3d_synthetic_root)
    scene = io.read_split_lists(root, "gl3d").scenes[0]
    cam_path = os.path.join(root, "data", scene.pid, "geolabel", "cameras.txt")
    cams = io.read_cameras(cam_path)
    cams[1] = cams[0]._replace(t=cams[0].t + 1.0)  # same orientation as image 0: pair (0, 1) has 0 degrees
    io.write_cameras(cam_path, cams)
    result = tool.build_scene(root, scene, num_corr=GL3D_NUM_CORR)
    assert result.filtered["rotation"] == 1
    assert not [n for n in os.listdir(os.path.dirname(io.scene_marker_path(root, scene.pid))) if n.startswith("0_")]
    result = tool.build_scene(root, scene, num_corr=100000, regenerate=True)
    assert result.num_match_sets == 0 and result.filtered["few_keypoints"] == 5


def test_kill_half_way_then_rerun_gives_the_same_files(gl3d_synthetic_root, gl3d_copy, subprocess_env):
    reference = gl3d_copy(gl3d_synthetic_root, "reference")
    assert _run_cli(reference, subprocess_env, "--workers=2").returncode == 0
    killed = gl3d_copy(gl3d_synthetic_root, "killed")
    env = dict(subprocess_env, **{tool.FAULT_ENV: "8"})  # dies like a SIGKILL after 8 files, mid-scene
    first = _run_cli(killed, env, "--workers=1")
    assert first.returncode == 137, first.stderr
    partial = _match_set_tree(killed)
    assert "split_marker" not in partial
    assert 0 < sum(n.endswith(".complete") for n in partial) < 3  # some scenes finished, not all
    second = _run_cli(killed, subprocess_env, "--workers=1")
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert summary["cached"] >= 1 and summary["built"] >= 1  # it resumed instead of starting over
    assert _match_set_tree(killed) == _match_set_tree(reference)


def test_finished_run_is_skipped_quickly_and_regenerate_rebuilds(gl3d_root, gl3d_copy):
    start = time.perf_counter()
    summary = tool.build_split(gl3d_root, "gl3d", num_corr=GL3D_NUM_CORR, progress=False)
    assert time.perf_counter() - start < 0.5
    assert summary.complete and {s.status for s in summary.scenes} == {"cached"}
    root = gl3d_copy(gl3d_root)
    before = _match_set_tree(root)
    summary = tool.build_split(root, "gl3d", num_corr=GL3D_NUM_CORR, regenerate=True, progress=False)
    assert {s.status for s in summary.scenes} == {"built"}
    assert _match_set_tree(root) == before  # same seed, same bytes
    with pytest.raises(io.GL3DFormatError, match=r"\.match_sets\.complete: match sets were built with num_corr=128"):
        tool.build_split(root, "gl3d", num_corr=64, progress=False)


def test_bad_scenes_are_skipped_counted_and_fail_the_exit_status(gl3d_synthetic_root, gl3d_copy, subprocess_env):
    root = gl3d_copy(gl3d_synthetic_root)
    scenes = io.read_split_lists(root, "gl3d").scenes
    os.remove(os.path.join(root, "data", scenes[0].pid, "geolabel", "corr.bin"))
    cam_path = os.path.join(root, "data", scenes[1].pid, "geolabel", "cameras.txt")
    with open(cam_path) as f:
        lines = f.read().splitlines()
    lines[2] = " ".join(lines[2].split()[:-1])  # a malformed camera line
    with open(cam_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    result = _run_cli(root, subprocess_env)
    assert result.returncode == tool.EXIT_SKIPPED
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["skipped"], summary["built"], summary["complete"]) == (2, 1, False)
    assert "corr.bin: correspondence file does not exist" in result.stderr
    assert "cameras.txt:3: expected 23 fields, got 22" in result.stderr
    assert not os.path.exists(io.split_marker_path(root, "gl3d"))
    assert os.path.exists(io.scene_marker_path(root, scenes[2].pid))


def test_truncated_corr_and_bad_feature_indices_skip_the_scene(gl3d_synthetic_root, gl3d_copy):
    root = gl3d_copy(gl3d_synthetic_root)
    scenes = io.read_split_lists(root, "gl3d").scenes
    corr_path = os.path.join(root, "data", scenes[0].pid, "geolabel", "corr.bin")
    with open(corr_path, "rb") as f:
        data = f.read()
    with open(corr_path, "wb") as f:
        f.write(data[:-100])
    kpt_path = os.path.join(root, "data", scenes[1].pid, "img_kpts", "00000002.bin")
    io.write_keypoints(kpt_path, io.read_keypoints(kpt_path)[:GL3D_NUM_CORR + 1])
    summary = tool.build_split(root, "gl3d", num_corr=GL3D_NUM_CORR, progress=False)
    reasons = {s.pid: s.reason for s in summary.skipped}
    assert set(reasons) == {scenes[0].pid, scenes[1].pid}
    assert "corr.bin: record" in reasons[scenes[0].pid] and "announces" in reasons[scenes[0].pid]
    assert "feature indices outside the keypoint files" in reasons[scenes[1].pid]
    # A skipped scene leaves no half-built output behind.
    folder = os.path.dirname(io.scene_marker_path(root, scenes[1].pid))
    assert os.listdir(folder) == []


def test_second_process_stops_with_a_clear_message_while_the_lock_is_held(gl3d_synthetic_root, gl3d_copy,
                                                                          subprocess_env):
    root = gl3d_copy(gl3d_synthetic_root)
    with open(os.path.join(root, tool.LOCK_NAME), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("4242")
        lock.flush()
        result = _run_cli(root, subprocess_env)
        assert result.returncode == tool.EXIT_LOCKED
        assert "another match-set generation (pid 4242) is running" in result.stderr
        assert _match_set_tree(root) == {}  # nothing written
        waiting = subprocess.Popen(
            [sys.executable, "-m", "data_tools.gl3d_match_sets", f"--gl3d={root}", "--split=gl3d",
             f"--num_corr={GL3D_NUM_CORR}", "--noprogress", "--wait"], env=subprocess_env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert waiting.poll() is None  # still waiting for the lock
        fcntl.flock(lock, fcntl.LOCK_UN)
    _, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0 and "waiting for the match-set generation of pid 4242" in err
    assert "split_marker" in _match_set_tree(root)


def test_tools_do_not_import_tensorflow(subprocess_env):
    """The tools start fast and fork safely only while gl3d_io stays free of TensorFlow."""
    code = ("import sys, data_tools.gl3d_match_sets, data_tools.make_synthetic_gl3d; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'")
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
