"""Readers and writers for the GL3D layout and TFMatch's match sets (numpy and OpenCV only, no TensorFlow).

The formats are described in ``docs/data_formats.md``. Every reader checks what it reads and raises
``GL3DFormatError`` naming the file and the problem; none returns a silently wrong array.

This module must not import TensorFlow: ``data_tools.gl3d_match_sets`` and ``data_tools.make_synthetic_gl3d``
load it directly (fast start, fork-safe worker processes).

Shape conventions: keypoint affines are ``[N, 6] float32`` rows ``a00 a01 tx a10 a11 ty`` in normalised
coordinates of the original camera image (pixel ``x = tx * W/2 + W/2``, ``y = ty * H/2 + H/2``); poses are
world-to-camera (``x_cam = R X + t``).
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass
from typing import Iterator, NamedTuple, Sequence

import numpy as np

LIST_FILES = ("image_index_offset.txt", "image_list.txt", "depth_list.txt", "regional_feat_list.txt")
CORR_HEADER_BYTES = 24  # idx0, idx1, n as little-endian uint64 (C 'unsigned long' on Linux x86-64)
CORR_COLUMNS = 15  # affine0 (6) | affine1 (6) | geometric distance | feat_idx0 | feat_idx1
CAMERA_FIELDS = 23  # id fx fy px py skew t(3) R(9) k1 k2 k3 W H
MATCH_SET_HEADER_FLOATS = 46
MATCH_SET_FORMAT = "tfmatch-match-set-v1"
SCENE_MARKER = ".complete"  # inside data/<pid>/match_sets/, written last, JSON
SPLIT_MARKER = ".match_sets.complete"  # inside list/<split>/, written last, JSON


class GL3DFormatError(ValueError):
    """A GL3D or match-set file that is missing, truncated or malformed; the message names the file."""


# ---------------------------------------------------------------------------------------------------------------
# Lists
def read_list(path: str) -> list[str]:
    """Reads a text list, one entry per non-empty line."""
    if not os.path.isfile(path):
        raise GL3DFormatError(f"{path}: list file does not exist")
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


class SceneRange(NamedTuple):
    pid: str  # scene id (directory name under data/)
    start: int  # global index of the scene's first image
    end: int  # one past the global index of its last image


def read_image_index_offset(path: str) -> list[SceneRange]:
    """Reads ``image_index_offset.txt``: ``<pid> <global_start> <global_end>`` per line, contiguous ranges."""
    scenes = []
    expected_start = 0
    for line_no, line in enumerate(read_list(path), start=1):
        fields = line.split()
        if len(fields) != 3:
            raise GL3DFormatError(f"{path}:{line_no}: expected '<pid> <start> <end>', got {line!r}")
        try:
            start, end = int(fields[1]), int(fields[2])
        except ValueError:
            raise GL3DFormatError(f"{path}:{line_no}: start and end must be integers, got {line!r}") from None
        if start != expected_start or end < start:
            raise GL3DFormatError(
                f"{path}:{line_no}: scene range {start}..{end} does not continue the previous one "
                f"(expected start {expected_start})")
        scenes.append(SceneRange(fields[0], start, end))
        expected_start = end
    return scenes


@dataclass(frozen=True)
class SplitLists:
    """The list files of ``list/<split>/``; paths are relative to the GL3D root."""

    scenes: list  # [SceneRange]
    images: list  # global image index -> relative path
    depths: list  # global image index -> relative path
    regional_features: list | None  # None when regional_feat_list.txt is absent (only ContextDesc needs it)


def read_split_lists(gl3d_root: str, split: str) -> SplitLists:
    """Reads and cross-checks ``list/<split>/{image_index_offset,image_list,depth_list,regional_feat_list}.txt``."""
    folder = os.path.join(gl3d_root, "list", split)
    if not os.path.isdir(folder):
        raise GL3DFormatError(f"{folder}: split folder does not exist (is --gl3d the GL3D root, {split!r} a split?)")
    scenes = read_image_index_offset(os.path.join(folder, "image_index_offset.txt"))
    images = read_list(os.path.join(folder, "image_list.txt"))
    depths = read_list(os.path.join(folder, "depth_list.txt"))
    reg_path = os.path.join(folder, "regional_feat_list.txt")
    regional = read_list(reg_path) if os.path.isfile(reg_path) else None
    total = scenes[-1].end if scenes else 0
    for name, entries in (("image_list.txt", images), ("depth_list.txt", depths), ("regional_feat_list.txt", regional)):
        if entries is not None and len(entries) != total:
            raise GL3DFormatError(
                f"{os.path.join(folder, name)}: has {len(entries)} entries, image_index_offset.txt covers {total}")
    return SplitLists(scenes, images, depths, regional)


def read_imageset(gl3d_root: str, split: str, subset: str) -> list[str]:
    """Scene ids of ``list/<split>/imageset_<subset>.txt`` (subset: train, test or all)."""
    return read_list(os.path.join(gl3d_root, "list", split, f"imageset_{subset}.txt"))


# ---------------------------------------------------------------------------------------------------------------
# Cameras
class Camera(NamedTuple):
    K: np.ndarray  # [3, 3] float64, [[fx, skew, px], [0, fy, py], [0, 0, 1]] at the original resolution
    t: np.ndarray  # [3] world -> camera translation
    R: np.ndarray  # [3, 3] world -> camera rotation
    dist: np.ndarray  # [3] radial distortion k1 k2 k3
    size: np.ndarray  # [2] original image size (W, H)


def read_cameras(path: str) -> dict[int, Camera]:
    """Reads ``geolabel/cameras.txt``: per line ``id fx fy px py skew t(3) R(9, row-major) k1 k2 k3 W H``."""
    if not os.path.isfile(path):
        raise GL3DFormatError(f"{path}: cameras file does not exist")
    cameras = {}
    with open(path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.split()
            if len(fields) != CAMERA_FIELDS:
                raise GL3DFormatError(f"{path}:{line_no}: expected {CAMERA_FIELDS} fields, got {len(fields)}")
            try:
                v = np.array([float(x) for x in fields], dtype=np.float64)
            except ValueError:
                raise GL3DFormatError(f"{path}:{line_no}: non-numeric field in {line.strip()[:80]!r}") from None
            if not np.all(np.isfinite(v)) or v[0] != int(v[0]):
                raise GL3DFormatError(f"{path}:{line_no}: non-finite value or non-integer image id")
            K = np.array([[v[1], v[5], v[3]], [0.0, v[2], v[4]], [0.0, 0.0, 1.0]])
            R = v[9:18].reshape(3, 3)
            if abs(np.linalg.det(R) - 1.0) > 1e-2:
                raise GL3DFormatError(f"{path}:{line_no}: rotation has determinant {np.linalg.det(R):.4f}, not 1")
            cameras[int(v[0])] = Camera(K, v[6:9].copy(), R, v[18:21].copy(), v[21:23].copy())
    return cameras


def write_cameras(path: str, cameras: dict[int, Camera]) -> None:
    lines = []
    for idx in sorted(cameras):
        c = cameras[idx]
        values = [c.K[0, 0], c.K[1, 1], c.K[0, 2], c.K[1, 2], c.K[0, 1], *c.t, *c.R.reshape(-1), *c.dist, *c.size]
        lines.append(" ".join([str(idx)] + [repr(float(x)) for x in values]))
    write_atomic(path, ("\n".join(lines) + "\n").encode())


# ---------------------------------------------------------------------------------------------------------------
# Keypoints, correspondences, depths
def read_keypoints(path: str) -> np.ndarray:
    """Reads ``img_kpts/XXXXXXXX.bin``: float32 ``[N, 6]`` normalised affines."""
    if not os.path.isfile(path):
        raise GL3DFormatError(f"{path}: keypoint file does not exist")
    size = os.path.getsize(path)
    if size % 24:
        raise GL3DFormatError(f"{path}: {size} bytes is not a whole number of 24-byte keypoints")
    kpts = np.fromfile(path, dtype="<f4").reshape(-1, 6)
    if not np.all(np.isfinite(kpts)):
        raise GL3DFormatError(f"{path}: keypoints contain NaN or Inf")
    return kpts


def write_keypoints(path: str, kpts: np.ndarray) -> None:
    write_atomic(path, np.ascontiguousarray(kpts, dtype="<f4").tobytes())


class CorrRecord(NamedTuple):
    idx0: int  # scene-local image index
    idx1: int
    corr: np.ndarray  # [n, 15] float32: affine0 (6) | affine1 (6) | geometric distance | feat_idx0 | feat_idx1


def iter_corr(path: str) -> Iterator[CorrRecord]:
    """Reads ``geolabel/corr.bin``: records of a 24-byte header (idx0, idx1, n as LE uint64) + n x 15 float32."""
    if not os.path.isfile(path):
        raise GL3DFormatError(f"{path}: correspondence file does not exist")
    with open(path, "rb") as f:
        data = f.read()
    pos, k = 0, 0
    while pos < len(data):
        if pos + CORR_HEADER_BYTES > len(data):
            raise GL3DFormatError(f"{path}: truncated header of record {k} at byte {pos}")
        idx0, idx1, n = struct.unpack_from("<QQQ", data, pos)
        pos += CORR_HEADER_BYTES
        nbytes = n * CORR_COLUMNS * 4
        if pos + nbytes > len(data):
            raise GL3DFormatError(
                f"{path}: record {k} ({idx0}, {idx1}) announces {n} correspondences ({nbytes} bytes), "
                f"only {len(data) - pos} bytes left (truncated file, or a 4-byte header written on Windows?)")
        corr = np.frombuffer(data, dtype="<f4", count=n * CORR_COLUMNS, offset=pos).reshape(n, CORR_COLUMNS)
        pos += nbytes
        k += 1
        yield CorrRecord(int(idx0), int(idx1), corr)


def read_corr(path: str) -> list[CorrRecord]:
    return list(iter_corr(path))


def write_corr(path: str, records: Sequence[CorrRecord]) -> None:
    chunks = []
    for r in records:
        corr = np.ascontiguousarray(r.corr, dtype="<f4").reshape(-1, CORR_COLUMNS)
        chunks.append(struct.pack("<QQQ", r.idx0, r.idx1, corr.shape[0]))
        chunks.append(corr.tobytes())
    write_atomic(path, b"".join(chunks))


_PFM_DIMS = re.compile(rb"^(\d+)\s+(\d+)\s*$")


def read_pfm(path: str) -> np.ndarray:
    """Reads a grey-scale PFM (``Pf``) and flips it to top-down rows, as TFMatch's ``load_pfm``.

    Shape: returns ``[H, W] float32``.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise GL3DFormatError(f"{path}: cannot read depth file ({err.strerror})") from None
    lines = data.split(b"\n", 3)
    if len(lines) < 4 or lines[0].strip() not in (b"Pf", b"PF"):
        raise GL3DFormatError(f"{path}: not a PFM file (header {data[:8]!r})")
    channels = 1 if lines[0].strip() == b"Pf" else 3
    match = _PFM_DIMS.match(lines[1])
    if not match:
        raise GL3DFormatError(f"{path}: malformed PFM size line {lines[1][:40]!r}")
    width, height = int(match.group(1)), int(match.group(2))
    try:
        scale = float(lines[2])
    except ValueError:
        raise GL3DFormatError(f"{path}: malformed PFM scale line {lines[2][:40]!r}") from None
    body = lines[3]
    expected = width * height * channels * 4
    if len(body) < expected:
        raise GL3DFormatError(f"{path}: truncated PFM, {width}x{height}x{channels} needs {expected} bytes of data, "
                              f"file has {len(body)}")
    dtype = "<f4" if scale < 0 else ">f4"
    depth = np.frombuffer(body, dtype=dtype, count=width * height * channels).astype(np.float32)
    depth = depth.reshape((height, width, channels) if channels == 3 else (height, width))
    if channels == 3:
        depth = depth[..., 0]
    return np.ascontiguousarray(depth[::-1])  # PFM stores the bottom row first


def write_pfm(path: str, depth: np.ndarray) -> None:
    """Writes ``[H, W]`` float32 as a little-endian ``Pf`` file (bottom row first)."""
    depth = np.asarray(depth, dtype="<f4")
    header = f"Pf\n{depth.shape[1]} {depth.shape[0]}\n-1.0\n".encode()
    write_atomic(path, header + np.ascontiguousarray(depth[::-1]).tobytes())


# ---------------------------------------------------------------------------------------------------------------
# Geometry helpers of the match-set generation (numpy; float64)
def relative_pose(R0, t0, R1, t1) -> tuple[np.ndarray, np.ndarray]:
    """Camera 0 -> camera 1 for world -> camera poses: ``x1 = R x0 + t``."""
    R = R1 @ R0.T
    return R, np.asarray(t1).reshape(3) - R @ np.asarray(t0).reshape(3)


def essential_matrix(R0, t0, R1, t1) -> np.ndarray:
    """``[t]x R`` of the relative pose, Frobenius-normalised (``x1^T E x0 = 0`` for normalised coordinates)."""
    R, t = relative_pose(R0, t0, R1, t1)
    tx = np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])
    E = tx @ R
    norm = np.linalg.norm(E)
    return E / norm if norm > 0 else E


def rotation_angle_deg(R0, R1) -> float:
    """Angle of the relative rotation ``R1 R0^T`` in degrees."""
    cos = (np.trace(R1 @ R0.T) - 1.0) / 2.0
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def affine_centres_to_pixels(kpts: np.ndarray, size) -> np.ndarray:
    """Pixel positions ``[N, 2]`` (x, y) of normalised affines in an image of ``size = (W, H)``."""
    w, h = float(size[0]) / 2.0, float(size[1]) / 2.0
    return np.stack([kpts[:, 2] * w + w, kpts[:, 5] * h + h], axis=1)


def undistort_keypoints(kpts: np.ndarray, camera: Camera) -> np.ndarray:
    """Undistorts keypoint centres (``tx, ty``) with OpenCV, dist = ``[k1, k2, 0, 0, k3]``; the 2x2 part is kept."""
    if not np.any(camera.dist):
        return kpts
    import cv2  # only needed for distorted cameras

    pts = affine_centres_to_pixels(kpts, camera.size).astype(np.float64)
    dist = np.array([camera.dist[0], camera.dist[1], 0.0, 0.0, camera.dist[2]])
    und = cv2.undistortPoints(pts[:, None, :], camera.K, dist, P=camera.K)[:, 0, :]
    out = kpts.copy()
    w, h = float(camera.size[0]) / 2.0, float(camera.size[1]) / 2.0
    out[:, 2] = (und[:, 0] - w) / w
    out[:, 5] = (und[:, 1] - h) / h
    return out


# ---------------------------------------------------------------------------------------------------------------
# Match sets
def match_set_floats(num_corr: int) -> int:
    """Floats per record: 46 header floats + num_corr x (6 + 6 + 1)."""
    return MATCH_SET_HEADER_FLOATS + 13 * num_corr


def match_set_bytes(num_corr: int) -> int:
    return 4 * match_set_floats(num_corr)


def match_set_name(k: int, rot_deg: int, orientation_deg: int) -> str:
    """``{k}_0_{rot}_{orientation}.match_set``: field 3 and 4 feed the split filter."""
    return f"{k}_0_{rot_deg}_{orientation_deg}.match_set"


def parse_match_set_name(name: str) -> tuple[int, int, int]:
    """Returns ``(k, rot_deg, orientation_deg)`` of a match-set file name."""
    stem = os.path.basename(name)
    if not stem.endswith(".match_set"):
        raise GL3DFormatError(f"{name}: not a .match_set file")
    fields = stem[: -len(".match_set")].split("_")
    if len(fields) != 4:
        raise GL3DFormatError(f"{name}: expected '<k>_0_<rot>_<orientation>.match_set'")
    try:
        return int(fields[0]), int(fields[2]), int(fields[3])
    except ValueError:
        raise GL3DFormatError(f"{name}: non-integer field in match-set name") from None


def pack_match_set(idx0, idx1, num_inliers, size0, size1, K0, K1, E, R, t, kpts0, kpts1, geo_sim) -> bytes:
    """Packs one record; ``kpts0/kpts1 [num_corr, 6]``, ``geo_sim [num_corr]``; rows < num_inliers match."""
    num_corr = kpts0.shape[0]
    if kpts1.shape != (num_corr, 6) or kpts0.shape != (num_corr, 6) or np.shape(geo_sim) != (num_corr,):
        raise ValueError(f"kpts0 {kpts0.shape}, kpts1 {kpts1.shape}, geo_sim {np.shape(geo_sim)} must be "
                         f"[num_corr, 6], [num_corr, 6], [num_corr]")
    rel_pose = np.concatenate([np.asarray(R).reshape(3, 3), np.asarray(t).reshape(3, 1)], axis=1)
    record = np.concatenate([
        [idx0, idx1, num_inliers], np.asarray(size0).reshape(2), np.asarray(size1).reshape(2),
        np.asarray(K0).reshape(9), np.asarray(K1).reshape(9), np.asarray(E).reshape(9), rel_pose.reshape(12),
        kpts0.reshape(-1), kpts1.reshape(-1), np.asarray(geo_sim).reshape(-1)]).astype("<f4")
    assert record.size == match_set_floats(num_corr)
    return record.tobytes()


def parse_match_set(buffer: bytes, num_corr: int, name: str = "<buffer>") -> dict:
    """Parses one record into numpy arrays (the same fields as ``tfmatch.data.gl3d.parse_match_set_record``)."""
    if len(buffer) != match_set_bytes(num_corr):
        raise GL3DFormatError(f"{name}: expected {match_set_bytes(num_corr)} bytes per record "
                              f"(num_corr={num_corr}), got {len(buffer)}")
    v = np.frombuffer(buffer, dtype="<f4")
    n6 = 6 * num_corr
    pose = v[34:46].reshape(3, 4)
    return {
        "index0": int(v[0]), "index1": int(v[1]), "num_inliers": int(v[2]),
        "image_size0": v[3:5].copy(), "image_size1": v[5:7].copy(),
        "K0": v[7:16].reshape(3, 3).copy(), "K1": v[16:25].reshape(3, 3).copy(),
        "essential": v[25:34].reshape(3, 3).copy(), "R_0to1": pose[:, :3].copy(), "t_0to1": pose[:, 3].copy(),
        "kpt_affine0": v[46:46 + n6].reshape(num_corr, 6).copy(),
        "kpt_affine1": v[46 + n6:46 + 2 * n6].reshape(num_corr, 6).copy(),
        "geo_sim": v[46 + 2 * n6:].copy(),
    }


def read_match_set(path: str, num_corr: int) -> dict:
    with open(path, "rb") as f:
        return parse_match_set(f.read(), num_corr, name=path)


def read_marker(path: str) -> dict | None:
    """Reads a JSON ``.complete`` marker; None when absent."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            marker = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise GL3DFormatError(f"{path}: unreadable completion marker ({err})") from None
    if not isinstance(marker, dict) or marker.get("format") != MATCH_SET_FORMAT or "num_corr" not in marker:
        raise GL3DFormatError(f"{path}: not a {MATCH_SET_FORMAT} completion marker")
    return marker


def scene_marker_path(gl3d_root: str, pid: str) -> str:
    return os.path.join(gl3d_root, "data", pid, "match_sets", SCENE_MARKER)


def split_marker_path(gl3d_root: str, split: str) -> str:
    return os.path.join(gl3d_root, "list", split, SPLIT_MARKER)


# ---------------------------------------------------------------------------------------------------------------
def write_atomic(path: str, payload: bytes) -> None:
    """Writes under a temporary name in the same folder, then renames: readers never see half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(payload)
    os.replace(tmp, path)
