r"""Builds TFMatch match sets from GL3D's ``corr.bin`` files, resumably.

    python -m data_tools.gl3d_match_sets --gl3d ROOT --split gl3d [--num_corr 1024] [--regenerate] [--workers 4]

For every scene of ``list/<split>/image_index_offset.txt`` (train and test scenes) it writes
``data/<pid>/match_sets/{k}_0_{rot}_{orientation}.match_set``, one fixed-length record per image pair that passes
TFMatch's filters (relative rotation >= 3 degrees, both images with >= num_corr keypoints, >= 1% of num_corr
correspondences). Format: ``docs/data_formats.md``.

Unlike the original (which regenerated everything after any crash):
- every file is written under a temporary name and renamed; a scene's ``match_sets/.complete`` marker (JSON, with
  num_corr) is written after its last file, the split's ``list/<split>/.match_sets.complete`` after its last scene;
  a rerun skips finished scenes, so a crash loses at most the scenes in progress; ``--regenerate`` rebuilds;
- random choices (subsampling, padding) come from a generator seeded by (``--seed``, scene id), so a resumed run
  writes the same bytes as an uninterrupted one, whatever ``--workers``;
- a scene with missing or corrupt files is skipped with a warning and counted; the exit status is 1 when any
  scene was skipped (the split marker is then not written), 3 when another run holds the lock
  (``<root>/.match_sets.lock``; ``--wait`` waits for it instead), 2 for unusable lists.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EXIT_OK, EXIT_SKIPPED, EXIT_FATAL, EXIT_LOCKED = 0, 1, 2, 3
LOCK_NAME = ".match_sets.lock"
# Test hook: die (as if killed, no clean-up) after writing this many match-set files, before renaming the next.
FAULT_ENV = "TFMATCH_FAULT_AFTER_FILES"

log = logging.getLogger("gl3d_match_sets")


def load_gl3d_io():
    """Imports ``tfmatch/data/gl3d_io.py`` without ``tfmatch/data/__init__`` (which imports TensorFlow).

    The tools stay TensorFlow-free: they start in a fraction of a second and their worker processes fork safely.
    """
    name = "tfmatch.data.gl3d_io"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[1] / "tfmatch" / "data" / "gl3d_io.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


io = load_gl3d_io()


def pool_start_method() -> str:
    """``fork`` (instant) unless TensorFlow is loaded in this process: forking its thread pools can hang."""
    return "forkserver" if "tensorflow" in sys.modules else "fork"


@dataclass
class SceneResult:
    pid: str
    status: str  # "built", "cached" or "skipped"
    num_match_sets: int = 0
    filtered: dict = field(default_factory=dict)  # reason -> number of pairs
    reason: str = ""
    seconds: float = 0.0


class _Fault:
    remaining = None


def _maybe_fault():
    if _Fault.remaining is None:
        value = os.environ.get(FAULT_ENV)
        _Fault.remaining = int(value) if value else -1
    if _Fault.remaining == 0:
        os._exit(137)
    if _Fault.remaining > 0:
        _Fault.remaining -= 1


def _write_match_set(path: str, payload: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(payload)
    _maybe_fault()
    os.replace(tmp, path)


def _clear_folder(folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            os.remove(path)


def build_scene(gl3d_root: str, scene, num_corr: int = 1024, seed: int = 0, regenerate: bool = False,
                min_rotation_deg: float = 3.0, min_inlier_ratio: float = 0.01) -> SceneResult:
    """Writes the match sets of one scene (``scene``: a ``gl3d_io.SceneRange``); returns what happened.

    Bad input raises ``gl3d_io.GL3DFormatError`` (the caller counts the scene as skipped).
    """
    start_time = time.perf_counter()
    scene_dir = os.path.join(gl3d_root, "data", scene.pid)
    out_dir = os.path.join(scene_dir, "match_sets")
    marker_path = os.path.join(out_dir, io.SCENE_MARKER)
    if not regenerate:
        try:
            marker = io.read_marker(marker_path)
        except io.GL3DFormatError:
            marker = None  # a damaged marker means an unfinished scene: rebuild it
        if marker is not None:
            if marker["num_corr"] != num_corr:
                raise io.GL3DFormatError(
                    f"{marker_path}: match sets were built with num_corr={marker['num_corr']}, asked for "
                    f"{num_corr}; pass --regenerate to rebuild")
            return SceneResult(scene.pid, "cached", marker["num_match_sets"], marker.get("filtered", {}))

    cameras = io.read_cameras(os.path.join(scene_dir, "geolabel", "cameras.txt"))
    corr_path = os.path.join(scene_dir, "geolabel", "corr.bin")
    records = io.read_corr(corr_path)  # reads the whole file first: a truncated one fails before any write
    num_images = scene.end - scene.start
    rng = np.random.default_rng([seed, zlib.crc32(scene.pid.encode())])
    kpt_cache: dict[int, np.ndarray] = {}
    filtered = {"rotation": 0, "few_keypoints": 0, "few_correspondences": 0}
    written = []

    def keypoints(local_idx):
        if local_idx not in kpt_cache:
            path = os.path.join(scene_dir, "img_kpts", f"{local_idx:08d}.bin")
            kpt_cache[local_idx] = io.undistort_keypoints(io.read_keypoints(path), cameras[local_idx])
        return kpt_cache[local_idx]

    _clear_folder(out_dir)
    try:
        for k, (i0, i1, corr) in enumerate(records):
            for i in (i0, i1):
                if i >= num_images or i not in cameras:
                    raise io.GL3DFormatError(f"{corr_path}: record {k} names image {i}, the scene has "
                                             f"{num_images} images and {len(cameras)} cameras")
            cam0, cam1 = cameras[i0], cameras[i1]
            rot = int(io.rotation_angle_deg(cam0.R, cam1.R))
            if rot < min_rotation_deg:
                filtered["rotation"] += 1
                continue
            all0, all1 = keypoints(i0), keypoints(i1)
            if all0.shape[0] < num_corr or all1.shape[0] < num_corr:
                filtered["few_keypoints"] += 1
                continue
            n = corr.shape[0]
            if n / num_corr < min_inlier_ratio:
                filtered["few_correspondences"] += 1
                continue
            keep = rng.choice(n, num_corr, replace=False) if n > num_corr else np.arange(n)
            feat = corr[keep, 13:15].astype(np.int64)
            if feat.min(initial=0) < 0 or feat[:, 0].max(initial=0) >= all0.shape[0] \
                    or feat[:, 1].max(initial=0) >= all1.shape[0]:
                raise io.GL3DFormatError(f"{corr_path}: record {k} has feature indices outside the keypoint "
                                         f"files ({all0.shape[0]} and {all1.shape[0]} keypoints)")
            inl0, inl1 = all0[feat[:, 0]], all1[feat[:, 1]]
            geo_sim = corr[keep, 12].astype(np.float32)
            geo_sim[np.isnan(geo_sim)] = 1.0
            # Mean absolute orientation change (no wrap-around, as the original).
            orientation = int(np.degrees(np.mean(np.abs(
                np.arctan2(inl0[:, 1], inl0[:, 0]) - np.arctan2(inl1[:, 1], inl1[:, 0])))))
            num_noise = num_corr - len(keep)
            if num_noise:
                # Pad with keypoints outside the kept correspondences, drawn independently per image.
                pads = []
                for all_k, used in ((all0, feat[:, 0]), (all1, feat[:, 1])):
                    pool = np.delete(np.arange(all_k.shape[0]), np.unique(used))
                    pads.append(all_k[rng.choice(pool, num_noise, replace=pool.size < num_noise)])
                inl0 = np.concatenate([inl0, pads[0]])
                inl1 = np.concatenate([inl1, pads[1]])
                geo_sim = np.concatenate([geo_sim, np.zeros(num_noise, np.float32)])
            R, t = io.relative_pose(cam0.R, cam0.t, cam1.R, cam1.t)
            payload = io.pack_match_set(
                scene.start + i0, scene.start + i1, len(keep), cam0.size, cam1.size, cam0.K, cam1.K,
                io.essential_matrix(cam0.R, cam0.t, cam1.R, cam1.t), R, t, inl0, inl1, geo_sim)
            path = os.path.join(out_dir, io.match_set_name(k, rot, orientation))
            _write_match_set(path, payload)
            written.append(path)
    except BaseException:
        for path in written:  # the scene has no marker, so these would never be read; keep the folder clean
            if os.path.exists(path):
                os.remove(path)
        raise
    marker = {"format": io.MATCH_SET_FORMAT, "num_corr": num_corr, "record_bytes": io.match_set_bytes(num_corr),
              "num_match_sets": len(written), "num_pairs": len(records), "filtered": filtered, "seed": seed}
    io.write_atomic(marker_path, json.dumps(marker, indent=1, sort_keys=True).encode())
    return SceneResult(scene.pid, "built", len(written), filtered, seconds=time.perf_counter() - start_time)


def _build_scene_safe(args) -> SceneResult:
    gl3d_root, scene, num_corr, seed, regenerate = args
    try:
        return build_scene(gl3d_root, scene, num_corr, seed, regenerate)
    except (io.GL3DFormatError, OSError) as err:
        return SceneResult(scene.pid, "skipped", reason=str(err))


class LockBusy(RuntimeError):
    pass


class _Lock:
    """An exclusive ``flock`` on ``<root>/.match_sets.lock``, released when the process ends (even when killed)."""

    def __init__(self, gl3d_root: str, wait: bool):
        import fcntl

        self.path = os.path.join(gl3d_root, LOCK_NAME)
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            if not wait:
                self.file.close()
                raise LockBusy(f"{self.path}: another match-set generation (pid {holder}) is running on this "
                               f"dataset; wait for it to finish, or pass --wait") from None
            log.warning("%s: waiting for the match-set generation of pid %s to finish", self.path, holder)
            fcntl.flock(self.file, fcntl.LOCK_EX)
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()

    def release(self):
        import fcntl

        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


@dataclass
class Summary:
    split: str
    num_corr: int
    scenes: list  # [SceneResult]
    seconds: float
    complete: bool

    @property
    def skipped(self):
        return [s for s in self.scenes if s.status == "skipped"]

    def as_dict(self) -> dict:
        built = [s for s in self.scenes if s.status == "built"]
        filtered: dict = {}
        for s in self.scenes:
            for key, value in s.filtered.items():
                filtered[key] = filtered.get(key, 0) + value
        return {
            "split": self.split, "num_corr": self.num_corr, "complete": self.complete,
            "scenes": len(self.scenes), "built": len(built),
            "cached": sum(s.status == "cached" for s in self.scenes), "skipped": len(self.skipped),
            "match_sets": sum(s.num_match_sets for s in self.scenes), "filtered_pairs": filtered,
            "seconds": round(self.seconds, 3),
            "seconds_per_built_scene": round(sum(s.seconds for s in built) / len(built), 3) if built else None,
        }


def build_split(gl3d_root: str, split: str, num_corr: int = 1024, regenerate: bool = False, workers: int = 1,
                seed: int = 0, wait: bool = False, progress: bool = True) -> Summary:
    """Builds (or resumes) the match sets of every scene of ``list/<split>``; see the module docstring."""
    start_time = time.perf_counter()
    if num_corr <= 0:
        raise ValueError(f"num_corr must be > 0, got {num_corr}")
    split_marker = io.split_marker_path(gl3d_root, split)
    scenes = io.read_split_lists(gl3d_root, split).scenes
    marker = io.read_marker(split_marker) if os.path.isfile(split_marker) else None
    if marker is not None and not regenerate:
        if marker["num_corr"] != num_corr:
            raise io.GL3DFormatError(f"{split_marker}: match sets were built with num_corr={marker['num_corr']}, "
                                     f"asked for {num_corr}; pass --regenerate to rebuild")
        if all(os.path.isfile(io.scene_marker_path(gl3d_root, s.pid)) for s in scenes):
            results = []
            for s in scenes:
                scene_marker = io.read_marker(io.scene_marker_path(gl3d_root, s.pid))
                results.append(SceneResult(s.pid, "cached", scene_marker["num_match_sets"],
                                           scene_marker.get("filtered", {})))
            return Summary(split, num_corr, results, time.perf_counter() - start_time, True)

    lock = _Lock(gl3d_root, wait)
    try:
        if os.path.exists(split_marker):
            os.remove(split_marker)
        jobs = [(gl3d_root, s, num_corr, seed, regenerate) for s in scenes]
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc=f"match sets {split}", unit="scene")
        results = []
        if workers <= 1:
            iterator = map(_build_scene_safe, jobs)
            pool = None
        else:
            import multiprocessing

            pool = multiprocessing.get_context(pool_start_method()).Pool(workers)
            iterator = pool.imap_unordered(_build_scene_safe, jobs)
        try:
            for result in iterator:
                if result.status == "skipped":
                    log.warning("skipped scene %s: %s", result.pid, result.reason)
                results.append(result)
                if bar is not None:
                    bar.update(1)
        finally:
            if pool is not None:
                pool.close()
                pool.join()
            if bar is not None:
                bar.close()
        order = {s.pid: i for i, s in enumerate(scenes)}
        results.sort(key=lambda r: order[r.pid])
        complete = not any(r.status == "skipped" for r in results)
        if complete:
            payload = {"format": io.MATCH_SET_FORMAT, "num_corr": num_corr,
                       "record_bytes": io.match_set_bytes(num_corr), "split": split, "num_scenes": len(scenes),
                       "num_match_sets": sum(r.num_match_sets for r in results), "seed": seed}
            io.write_atomic(split_marker, json.dumps(payload, indent=1, sort_keys=True).encode())
    finally:
        lock.release()
    return Summary(split, num_corr, results, time.perf_counter() - start_time, complete)


def main(argv=None) -> int:
    from absl import flags

    flags.DEFINE_string("gl3d", None, "GL3D root (holds list/ and data/)", required=True)
    flags.DEFINE_string("split", "gl3d", "list/<split>: gl3d, tourism, comb or blendedmvg")
    flags.DEFINE_integer("num_corr", 1024, "correspondences per match set (record size follows)")
    flags.DEFINE_boolean("regenerate", False, "rebuild scenes that are already complete")
    flags.DEFINE_integer("workers", 1, "scenes processed in parallel")
    flags.DEFINE_integer("seed", 0, "seed of the subsampling and padding draws")
    flags.DEFINE_boolean("wait", False, "wait for a concurrent run on the same dataset instead of stopping")
    flags.DEFINE_boolean("progress", True, "show a progress bar")
    FLAGS = flags.FLAGS
    FLAGS(argv if argv is not None else sys.argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = build_split(FLAGS.gl3d, FLAGS.split, FLAGS.num_corr, FLAGS.regenerate, FLAGS.workers,
                              FLAGS.seed, FLAGS.wait, FLAGS.progress)
    except LockBusy as err:
        log.error("%s", err)
        return EXIT_LOCKED
    except (io.GL3DFormatError, ValueError) as err:
        log.error("%s", err)
        return EXIT_FATAL
    for scene in summary.skipped:
        log.warning("skipped %s: %s", scene.pid, scene.reason)
    print(json.dumps(summary.as_dict()), flush=True)
    if summary.skipped:
        log.error("%d of %d scenes skipped (see warnings above); split marker not written, rerun after fixing them",
                  len(summary.skipped), len(summary.scenes))
        return EXIT_SKIPPED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
