"""Readers and writers of the evaluation harness: images, HPatches sequences, SuperGlue pair lists, h5 caches.

Every reader fails with an error that names the file (and the line, for text files) and what is wrong.

h5 layouts (the ones hloc uses, so its tools read our caches and the other way round):

* features: one group per image name (a relative path such as ``v_boat/1.png``; ``/`` makes nested groups) with
  ``keypoints [N, 2] float32`` (x, y in pixels of the ORIGINAL image, integer = pixel centre),
  ``scores [N] float32``, ``descriptors [D, N]`` (hloc stores them transposed) and ``image_size [2] int`` =
  (width, height) of the original image.
* matches: one group per pair, named ``pair_key(name0, name1)`` (``/`` in the names replaced by ``-``, the two
  joined by ``/``), with ``matches0 [N0] int32`` (-1 = unmatched) and ``matching_scores0 [N0] float32``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import h5py
import numpy as np

IMAGE_EXTENSIONS = (".png", ".ppm", ".jpg", ".jpeg", ".pgm", ".bmp", ".tif", ".tiff")
FEATURE_KEYS = ("keypoints", "scores", "descriptors", "image_size")


class EvalInputError(ValueError):
    """Bad evaluation input; the message names the file (and line) and the problem."""


# ----------------------------------------------------------------------------------------------------------------
# Images
def read_image(path, channels: int = 3) -> np.ndarray:
    """Reads an image as ``uint8`` RGB (``channels=3``) or grayscale (``channels=1``).

    Shape:
      returns ``[H, W, channels]`` uint8.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise EvalInputError(f"{path}: image file not found")
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    image = cv2.imread(path, flag)
    if image is None:
        raise EvalInputError(f"{path}: cannot decode the image (corrupt or not an image)")
    if channels == 1:
        return image[:, :, None]
    if channels != 3:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def parse_resize(values) -> tuple[int, ...]:
    """``[]`` (keep the size), ``[L]`` (longer side L) or ``[W, H]`` (exact size), from strings or ints."""
    values = tuple(int(v) for v in (values or ()) if str(v).strip() != "")
    if len(values) > 2 or any(v <= 0 for v in values):
        raise ValueError(f"--resize takes nothing, one positive int (longer side) or two (width height), got {values}")
    return values


def resized_size(width: int, height: int, resize: tuple[int, ...]) -> tuple[int, int]:
    """The (width, height) an image of the given size gets under the ``parse_resize`` rule."""
    if not resize:
        return int(width), int(height)
    if len(resize) == 1:
        factor = resize[0] / max(height, width)
        return max(1, int(round(width * factor))), max(1, int(round(height * factor)))
    return int(resize[0]), int(resize[1])


def resize_image(image: np.ndarray, resize: tuple[int, ...]) -> tuple[np.ndarray, tuple[float, float]]:
    """Resizes by the ``parse_resize`` rule. Returns the image and the scale (sx, sy) = original / resized.

    Shape:
      image: ``[H, W, C]`` -> ``[h, w, C]``.
    """
    height, width = image.shape[:2]
    new_w, new_h = resized_size(width, height, resize)
    if (new_w, new_h) == (width, height):
        return image, (1.0, 1.0)
    interp = cv2.INTER_AREA if new_w < width else cv2.INTER_LINEAR
    out = cv2.resize(image, (new_w, new_h), interpolation=interp)
    if out.ndim == 2:
        out = out[:, :, None]
    return out, (width / new_w, height / new_h)


def list_images(images: str) -> tuple[Path, list[str]]:
    """``images`` is a directory (every image below it, sorted) or a text file with one relative path a line
    (relative to the file's directory). Returns (root, names)."""
    path = Path(images)
    if path.is_dir():
        names = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not names:
            raise EvalInputError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this directory")
        return path, names
    if path.is_file():
        names = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        if not names:
            raise EvalInputError(f"{path}: the image list is empty")
        return path.parent, names
    raise EvalInputError(f"{path}: neither an image directory nor an image list file")


# ----------------------------------------------------------------------------------------------------------------
# HPatches sequences
@dataclass
class Sequence:
    name: str
    images: list[Path]  # images[0] is the reference image "1"
    homographies: list[np.ndarray] = field(default_factory=list)  # H_1_k for k = 2..; maps image 1 to image k

    @property
    def kind(self) -> str:
        return self.name[:1]  # "i" (illumination) or "v" (viewpoint)


def read_homography(path) -> np.ndarray:
    """Reads a 3x3 homography written as text (HPatches ``H_1_k``), normalised so that H[2,2] = 1."""
    path = Path(path)
    if not path.is_file():
        raise EvalInputError(f"{path}: homography file not found")
    try:
        values = np.array(path.read_text().split(), dtype=np.float64)
    except ValueError as err:
        raise EvalInputError(f"{path}: not a 3x3 matrix of numbers ({err})") from None
    if values.size != 9:
        raise EvalInputError(f"{path}: expected 9 numbers (3x3 homography), found {values.size}")
    matrix = values.reshape(3, 3)
    if not np.all(np.isfinite(matrix)) or abs(matrix[2, 2]) < 1e-12:
        raise EvalInputError(f"{path}: homography is not finite or has H[2,2] = 0")
    return matrix / matrix[2, 2]


def _find_image(directory: Path, stem: str) -> Path | None:
    for ext in IMAGE_EXTENSIONS:
        candidate = directory / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def read_hpatches(root, num_images: int = 6, sequences: str = "") -> list[Sequence]:
    """Lists the HPatches sequences under ``root`` (``<seq>/1..6.<ext>`` and ``H_1_2 .. H_1_6``).

    Args:
      num_images: images per sequence (6 in HPatches).
      sequences: optional regular expression; only sequence names that match it are kept.
    """
    root = Path(root)
    if not root.is_dir():
        raise EvalInputError(f"{root}: HPatches root directory not found")
    pattern = re.compile(sequences) if sequences else None
    out = []
    for seq_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if pattern is not None and not pattern.search(seq_dir.name):
            continue
        if seq_dir.name[:2] not in ("i_", "v_"):
            raise EvalInputError(f"{seq_dir}: sequence names must start with 'i_' or 'v_'")
        images = []
        for k in range(1, num_images + 1):
            image = _find_image(seq_dir, str(k))
            if image is None:
                raise EvalInputError(f"{seq_dir}: image {k} ({k}.png, {k}.ppm, ...) not found")
            images.append(image)
        homographies = [read_homography(seq_dir / f"H_1_{k}") for k in range(2, num_images + 1)]
        out.append(Sequence(seq_dir.name, images, homographies))
    if not out:
        raise EvalInputError(f"{root}: no HPatches sequences (i_*/ or v_*/ directories) found")
    return out


# ----------------------------------------------------------------------------------------------------------------
# SuperGlue pairs with ground truth
@dataclass
class PosePair:
    name0: str
    name1: str
    rot0: int  # EXIF rotation in steps of 90 degrees (counter-clockwise, as np.rot90)
    rot1: int
    K0: np.ndarray  # [3, 3] for the full-size image
    K1: np.ndarray
    T_0to1: np.ndarray  # [4, 4]; x1 = R x0 + t


def read_pairs(path, with_gt: bool = True) -> list:
    """Reads a pair list. ``with_gt``: the SuperGlue format (38 fields: ``name0 name1 rot0 rot1 K0(9) K1(9)
    T_0to1(16)``) -> ``PosePair``s; otherwise two names a line -> ``(name0, name1)`` tuples (extra fields are an
    error). Blank lines and ``#`` comments are skipped."""
    path = Path(path)
    if not path.is_file():
        raise EvalInputError(f"{path}: pairs file not found")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if not with_gt:
            if len(fields) != 2:
                raise EvalInputError(f"{path}:{number}: expected 2 fields (name0 name1), found {len(fields)}")
            pairs.append((fields[0], fields[1]))
            continue
        if len(fields) != 38:
            raise EvalInputError(
                f"{path}:{number}: expected 38 fields (name0 name1 rot0 rot1 K0(9) K1(9) T_0to1(16)), "
                f"found {len(fields)}")
        try:
            numbers = np.array(fields[4:], dtype=np.float64)
            rot0, rot1 = int(fields[2]), int(fields[3])
        except ValueError as err:
            raise EvalInputError(f"{path}:{number}: non-numeric field ({err})") from None
        if rot0 not in range(4) or rot1 not in range(4):
            raise EvalInputError(f"{path}:{number}: rotations must be 0..3, got {rot0} {rot1}")
        pairs.append(PosePair(fields[0], fields[1], rot0, rot1, numbers[:9].reshape(3, 3),
                              numbers[9:18].reshape(3, 3), numbers[18:].reshape(4, 4)))
    if not pairs:
        raise EvalInputError(f"{path}: no pairs in the file")
    return pairs


# ----------------------------------------------------------------------------------------------------------------
# h5 caches
def pair_key(name0: str, name1: str) -> str:
    return name0.replace("/", "-") + "/" + name1.replace("/", "-")


def has_features(h5: h5py.File, name: str) -> bool:
    return name in h5 and all(key in h5[name] for key in FEATURE_KEYS)


def write_features(h5: h5py.File, name: str, keypoints, scores, descriptors, image_size) -> None:
    """Writes one image's features (replacing a partial group left by a crash).

    Shape:
      keypoints: ``[N, 2]``; scores: ``[N]``; descriptors: ``[N, D]`` (stored transposed, ``[D, N]``);
      image_size: (width, height).
    """
    if name in h5:
        del h5[name]
    group = h5.create_group(name)
    group.create_dataset("keypoints", data=np.asarray(keypoints, np.float32).reshape(-1, 2))
    group.create_dataset("scores", data=np.asarray(scores, np.float32).reshape(-1))
    descriptors = np.asarray(descriptors)
    group.create_dataset("descriptors", data=descriptors.T)
    # Written last: its presence marks the group complete (see has_features).
    group.create_dataset("image_size", data=np.asarray(image_size, np.int64))


def read_features(h5: h5py.File, name: str, path: str = "") -> dict:
    """Returns ``keypoints [N,2]``, ``scores [N]``, ``descriptors [N,D]``, ``image_size (w, h)``."""
    if not has_features(h5, name):
        raise EvalInputError(f"{path or h5.filename}: no complete features for image {name!r}")
    group = h5[name]
    return {"keypoints": group["keypoints"][()], "scores": group["scores"][()],
            "descriptors": group["descriptors"][()].T, "image_size": group["image_size"][()]}


def write_matches(h5: h5py.File, name0: str, name1: str, matches0, scores0) -> None:
    key = pair_key(name0, name1)
    if key in h5:
        del h5[key]
    group = h5.create_group(key)
    group.create_dataset("matching_scores0", data=np.asarray(scores0, np.float32))
    group.create_dataset("matches0", data=np.asarray(matches0, np.int32))  # last: marks the group complete


def has_matches(h5: h5py.File, name0: str, name1: str) -> bool:
    key = pair_key(name0, name1)
    return key in h5 and "matches0" in h5[key]


def read_matches(h5: h5py.File, name0: str, name1: str) -> tuple[np.ndarray, np.ndarray]:
    key = pair_key(name0, name1)
    if not has_matches(h5, name0, name1):
        raise EvalInputError(f"{h5.filename}: no matches for pair {name0} {name1}")
    return h5[key]["matches0"][()], h5[key]["matching_scores0"][()]
