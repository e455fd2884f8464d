"""Pass 1 of the two-pass evaluation: features and matches cached in h5, resumable, guarded by their config.

An h5 cache carries the JSON of the configuration that made it (root attribute ``tfmatch_config``). Reusing a
cache made with another configuration is refused unless ``overwrite`` is set, which deletes it first; a cache
with the same configuration is completed (items already present are skipped), so a crashed run resumes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from tfmatch.eval import io

CONFIG_ATTR = "tfmatch_config"


class CacheConflictError(RuntimeError):
    """A cache or output directory holds results of another configuration (and overwrite was not given)."""


def _canonical(config: dict) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if _canonical({"v": old.get(k)}) != _canonical({"v": new.get(k)})]


def check_json_config(path, config: dict, overwrite: bool) -> None:
    """Writes ``config`` to ``path`` (JSON) unless it holds another one: then refuses, or with ``overwrite``
    replaces it (the caller deletes what the old config produced)."""
    path = Path(path)
    if path.is_file():
        old = json.loads(path.read_text())
        if _canonical(old) != _canonical(config) and not overwrite:
            raise CacheConflictError(
                f"{path}: results here were made with another configuration (differs in "
                f"{', '.join(_differences(old, config))}); use another --out or pass --overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def open_cache(path, config: dict, overwrite: bool) -> h5py.File:
    """Opens (creating) an h5 cache for appending, after checking its configuration."""
    path = Path(path)
    if path.exists():
        try:
            with h5py.File(path, "r") as h5:
                old = h5.attrs.get(CONFIG_ATTR)
        except OSError as err:
            if not overwrite:
                raise CacheConflictError(f"{path}: unreadable h5 cache ({err}); pass --overwrite to rebuild it")
            old = None
        if old is not None and _canonical(json.loads(old)) != _canonical(config) and not overwrite:
            raise CacheConflictError(
                f"{path}: cached with another configuration (differs in "
                f"{', '.join(_differences(json.loads(old), config))}); use another output or pass --overwrite")
        if overwrite and (old is None or _canonical(json.loads(old)) != _canonical(config)):
            path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    h5 = h5py.File(path, "a")
    h5.attrs[CONFIG_ATTR] = _canonical(config)
    return h5


def rotate_points_back(points: np.ndarray, rot: int, width: int, height: int) -> np.ndarray:
    """Maps (x, y) pixels of ``np.rot90(image, rot)`` back to the pixels of ``image`` (``width x height``).

    Shape:
      points ``[N, 2]`` -> ``[N, 2]``.
    """
    points = np.asarray(points, np.float64).reshape(-1, 2)
    # Undo one counter-clockwise quarter turn at a time; (w, h) is the size of the image before that turn.
    sizes = []
    w, h = width, height
    for _ in range(rot % 4):
        sizes.append((w, h))
        w, h = h, w
    for w, h in reversed(sizes):
        x, y = points[:, 0].copy(), points[:, 1].copy()
        points = np.stack([w - 1 - y, x], axis=1)  # rot90: new[y', x'] = old[x', w-1-y']
    return points.astype(np.float32)


def extract_features(extractor, root, items, h5_path, overwrite: bool = False, progress: bool = True,
                     config_extra: dict | None = None) -> int:
    """Extracts features of every item into ``h5_path``; returns how many were computed (not cached).

    Args:
      items: ``(key, relative path, rot)`` triples: ``key`` names the h5 group; ``rot`` quarter turns
        (``np.rot90``) the extractor applies after its resize (``Extractor``); keypoints are stored in the pixels
        of the unrotated, original-size image.
    """
    config = dict(extractor.config, **(config_extra or {}))
    computed = 0
    with open_cache(h5_path, config, overwrite) as h5:
        todo = [item for item in items if not io.has_features(h5, item[0])]
        for key, relative, rot in tqdm(todo, desc=f"extract {extractor.name}", disable=not progress, unit="img"):
            image = io.read_image(Path(root) / relative, channels=extractor.channels)
            height, width = image.shape[:2]
            keypoints, scores, descriptors = extractor(image, rot) if rot else extractor(image)
            io.write_features(h5, key, keypoints, scores, descriptors, (width, height))
            h5.flush()
            computed += 1
    return computed


def match_features(features_path, pairs, matcher, matches_path, matcher_config: dict, overwrite: bool = False,
                   progress: bool = True) -> int:
    """Matches every ``(key0, key1)`` pair of ``features_path`` into ``matches_path``; returns how many were
    computed. The matches cache is tied to the features' configuration and ``matcher_config``."""
    with h5py.File(features_path, "r") as features:
        config = {"features": json.loads(features.attrs.get(CONFIG_ATTR, "{}")), "matcher": matcher_config}
        computed = 0
        with open_cache(matches_path, config, overwrite) as h5:
            todo = [pair for pair in pairs if not io.has_matches(h5, *pair)]
            for key0, key1 in tqdm(todo, desc="match", disable=not progress, unit="pair"):
                f0 = io.read_features(features, key0, str(features_path))
                f1 = io.read_features(features, key1, str(features_path))
                matches0, scores0 = matcher(f0, f1)
                io.write_matches(h5, key0, key1, matches0, scores0)
                computed += 1
    return computed
