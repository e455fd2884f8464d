"""GL3D patch pairs for GeoDesc and ContextDesc: match sets -> 32x32 patch pairs (TFMatch's non-dense input).

One element = one match set (an image pair with ``num_corr`` keypoint rows; the first ``num_inliers`` rows of
image 0 and image 1 correspond, the rest are non-matching padding). Batches are dicts:

    patches0, patches1   [B, N, 32, 32, 1] float32 0..255 (not standardised; the model does it)
    num_inliers          [B] int32
    keypoints0, keypoints1  [B, N, 2] float32 keypoint centres, normalised image coordinates in [-1, 1]
    regional0, regional1 [B, R, R, D] float32 (only with ``regional=True``; files listed in regional_feat_list.txt)

Patches are cut as TFMatch does (spec tfmatch-family.md §1.5): the image is SYMMETRIC-padded by 10% per side and
the crop transform is ``[A P | t * 5/6]`` in normalised coordinates of the padded image, with ``[A | t]`` the
stored keypoint affine and ``P = crop_scale * s [[a cos th, a sin th], [-sin th / a, cos th / a]]`` a random
perturbation in training (``P = crop_scale * I`` otherwise). The 2x2 part is not rescaled for the padding,
exactly as the original (so the support is 1.2x ``A`` in image half-widths).

Photometric augmentation in training: random brightness (+-50), contrast [0.3, 1.5] and a 1- or 3-pixel motion
blur in a random direction, each clipped to [0, 255].
"""

from __future__ import annotations

import glob
import math
import os

import gin
import numpy as np
import tensorflow as tf

from tfmatch.data import gl3d_io

PATCH_SIZE = 32


def match_set_files(gl3d_root: str, split: str, subset: str, max_rotation_diff: int = 60, min_rotation: int = 3):
    """Match-set files of the scenes in ``imageset_<subset>.txt``, filtered as TFMatch (rotation >= 3 deg,
    mean keypoint orientation difference <= 60 deg), sorted."""
    files = []
    for pid in gl3d_io.read_imageset(gl3d_root, split, subset):
        for path in sorted(glob.glob(os.path.join(gl3d_root, "data", pid, "match_sets", "*.match_set"))):
            _, rot, orientation = gl3d_io.parse_match_set_name(path)
            if rot >= min_rotation and orientation <= max_rotation_diff:
                files.append(path)
    return files


def _num_corr(gl3d_root: str, split: str, num_corr: int | None) -> int:
    marker = gl3d_io.read_marker(gl3d_io.split_marker_path(gl3d_root, split))
    if marker is None:
        raise FileNotFoundError(f"{gl3d_io.split_marker_path(gl3d_root, split)}: match sets of split {split!r} are "
                                "not complete; run python -m data_tools.gl3d_match_sets first")
    if num_corr is not None and int(marker["num_corr"]) != num_corr:
        raise ValueError(f"{gl3d_io.split_marker_path(gl3d_root, split)}: match sets have num_corr="
                         f"{marker['num_corr']}, gl3d_patch_dataset was given num_corr={num_corr}")
    return int(marker["num_corr"])


def random_perturbation(num, seed, crop_scale=0.5, rng_angle=5.0, rng_scale=0.3, rng_anis=0.4):
    """TFMatch ``get_rnd_affine`` (sync=True): per row a shared large angle for both towers, own jitter.

    Shape:
        returns: (P0, P1), each [num, 2, 2] float32
    """
    seeds = tf.random.experimental.stateless_split(seed, 5)
    sync = tf.random.stateless_uniform([num], seeds[0], -90.0, 90.0)
    out = []
    for t in range(2):
        s_seed = tf.random.experimental.stateless_fold_in(seeds[1 + t], t)
        u = tf.random.stateless_uniform([num, 3], s_seed, -1.0, 1.0)
        scale = tf.pow(2.0, rng_scale * u[:, 0])
        anis = tf.pow(2.0, rng_anis / 2.0 * u[:, 1])
        theta = (sync + rng_angle * u[:, 2]) * (math.pi / 180.0)
        c, s = tf.cos(theta), tf.sin(theta)
        p = tf.stack([tf.stack([anis * c, anis * s], -1), tf.stack([-s / anis, c / anis], -1)], -2)
        out.append(crop_scale * scale[:, None, None] * p)
    return out[0], out[1]


def crop_keypoint_patches(image, affines, perturbation, pad_ratio=0.1, patch_size=PATCH_SIZE):
    """Cuts TFMatch training patches from one image.

    Shape:
        image: [H, W, 1] float32; affines: [N, 6] (a00 a01 tx a10 a11 ty, normalised); perturbation: [N, 2, 2]
        returns: [N, P, P, 1] float32
    """
    height = tf.shape(image)[0]
    width = tf.shape(image)[1]
    pad_y = tf.cast(tf.round(tf.cast(height, tf.float32) * pad_ratio), tf.int32)
    pad_x = tf.cast(tf.round(tf.cast(width, tf.float32) * pad_ratio), tf.int32)
    padded = tf.pad(image, [[pad_y, pad_y], [pad_x, pad_x], [0, 0]], mode="SYMMETRIC")
    hp = tf.cast(height + 2 * pad_y, tf.float32)
    wp = tf.cast(width + 2 * pad_x, tf.float32)
    a = tf.reshape(affines, [-1, 2, 3])
    lin = tf.matmul(a[:, :, :2], perturbation)  # [N, 2, 2]
    # Translation of the unpadded image expressed in the padded one (TFMatch: t * 5/6 for a 10% pad).
    tx = a[:, 0, 2] * tf.cast(width, tf.float32) / wp
    ty = a[:, 1, 2] * tf.cast(height, tf.float32) / hp
    g = tf.linspace(-1.0, 1.0, patch_size)  # both ends included, as the TFMatch spatial transformer
    gy, gx = tf.meshgrid(g, g, indexing="ij")
    grid = tf.stack([tf.reshape(gx, [-1]), tf.reshape(gy, [-1])], 0)  # [2, P*P]
    src = tf.matmul(lin, grid[None]) + tf.stack([tx, ty], -1)[:, :, None]  # [N, 2, P*P], normalised padded
    x = (src[:, 0] + 1.0) * wp / 2.0
    y = (src[:, 1] + 1.0) * hp / 2.0
    x = tf.clip_by_value(x, 0.0, wp - 1.0)
    y = tf.clip_by_value(y, 0.0, hp - 1.0)
    x0, y0 = tf.floor(x), tf.floor(y)
    wx, wy = x - x0, y - y0
    x0i, y0i = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    x1i = tf.minimum(x0i + 1, tf.cast(wp, tf.int32) - 1)
    y1i = tf.minimum(y0i + 1, tf.cast(hp, tf.int32) - 1)
    flat = tf.reshape(padded, [-1])
    wpi = tf.cast(wp, tf.int32)

    def at(yi, xi):
        return tf.gather(flat, yi * wpi + xi)

    top = at(y0i, x0i) * (1 - wx) + at(y0i, x1i) * wx
    bottom = at(y1i, x0i) * (1 - wx) + at(y1i, x1i) * wx
    return tf.reshape(top * (1 - wy) + bottom * wy, [-1, patch_size, patch_size, 1])


def photometric_augmentation(image, seed):
    """Brightness +-50, contrast [0.3, 1.5], motion blur of size 1 or 3 (TFMatch ``photaug``), clipped to 0..255.

    Shape:
        image: [H, W, 1] float32 0..255 -> same
    """
    seeds = tf.random.experimental.stateless_split(seed, 4)
    image = tf.clip_by_value(image + tf.random.stateless_uniform([], seeds[0], -50.0, 50.0), 0.0, 255.0)
    factor = tf.random.stateless_uniform([], seeds[1], 0.3, 1.5)
    mean = tf.reduce_mean(image)
    image = tf.clip_by_value((image - mean) * factor + mean, 0.0, 255.0)
    # Motion blur: a 3x3 line kernel (horizontal, vertical, two diagonals) with Gaussian weights, or identity.
    lines = np.zeros((4, 3, 3), np.float32)
    lines[0, 1, :] = 1
    lines[1, :, 1] = 1
    lines[2] = np.eye(3)
    lines[3] = np.fliplr(np.eye(3))
    offsets = np.arange(3) - 1.0
    radius2 = offsets[None, :] ** 2 + offsets[:, None] ** 2
    weights = lines * np.exp(-radius2 / (2 * 9 / 16.0))[None]  # Gaussian along the line, variance k^2 / 16
    weights /= weights.sum(axis=(1, 2), keepdims=True)
    identity = np.zeros((1, 3, 3), np.float32)
    identity[0, 1, 1] = 1
    kernels = tf.constant(np.concatenate([identity, weights], 0), tf.float32)  # [5, 3, 3]
    blur = tf.random.stateless_uniform([], seeds[2], 0, 2, dtype=tf.int32)
    direction = tf.random.stateless_uniform([], seeds[3], 0, 4, dtype=tf.int32)
    kernel = kernels[blur * (1 + direction)]
    padded = tf.pad(image[None], [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    image = tf.nn.conv2d(padded, kernel[:, :, None, None], 1, "VALID")[0]
    return tf.clip_by_value(image, 0.0, 255.0)


def _checked(value, condition, message, path):
    """``value`` once ``condition`` holds; otherwise InvalidArgumentError with the message and the file."""
    with tf.control_dependencies([tf.debugging.Assert(condition, [message, path])]):
        return tf.identity(value)


def _decode_gray(path):
    image = tf.io.decode_image(tf.io.read_file(path), channels=1, expand_animations=False)
    return tf.cast(image, tf.float32)


@gin.configurable
def gl3d_patch_dataset(split: str, global_batch_size: int, input_context=None, gl3d_root: str = gin.REQUIRED,
                       data_split: str = "gl3d", num_corr: int | None = None, num_pairs: int | None = None,
                       regional: bool = False, regional_resolution: int = 14, regional_dim: int = 2048,
                       photometric: bool = True, perturb: bool = True, seed: int = 0, workers: int = 4):
    """``tf.data`` of GL3D patch-pair batches (module docstring); infinite for ``split == "train"``.

    Args:
      split: "train" (imageset_train scenes, shuffled, augmented, repeated) or "test" (imageset_test, one pass).
      global_batch_size: match sets per step over all replicas (TFMatch: 2).
      input_context: ``tf.distribute.InputContext``; shards files by pipeline and batches per replica.
      gl3d_root: GL3D root (``list/``, ``data/``); data_split: the list folder (gl3d, tourism, comb, blendedmvg).
      num_corr: rows per match set; None = from the split's completion marker.
      num_pairs: keep the first ``num_pairs`` rows of each match set (inliers come first); None = all.
      regional: also read the regional features (ContextDesc), ``regional_resolution``^2 x ``regional_dim``.
      photometric, perturb: photometric augmentation and random patch affines in training.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    training = split == "train"
    num_corr = _num_corr(gl3d_root, data_split, num_corr)
    rows = num_corr if num_pairs is None else min(num_pairs, num_corr)
    lists = gl3d_io.read_split_lists(gl3d_root, data_split)
    files = match_set_files(gl3d_root, data_split, split)
    if not files:
        raise ValueError(f"{gl3d_root}/list/{data_split}: no match sets for the {split} scenes")
    if regional and lists.regional_features is None:
        raise FileNotFoundError(f"{gl3d_root}/list/{data_split}/regional_feat_list.txt does not exist; run "
                                "python -m data_tools.extract_regional_features first")
    image_paths = tf.constant([os.path.join(gl3d_root, p) for p in lists.images])
    regional_paths = tf.constant([os.path.join(gl3d_root, p) for p in (lists.regional_features or [""])])
    record_bytes = gl3d_io.match_set_bytes(num_corr)
    n6 = 6 * num_corr

    ds = tf.data.Dataset.from_tensor_slices(files)
    batch_size = global_batch_size
    if input_context is not None:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch_size = input_context.get_per_replica_batch_size(global_batch_size)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate()

    def load(index, path):
        raw = tf.io.read_file(path)
        raw = _checked(raw, tf.equal(tf.strings.length(raw), record_bytes),
                       f"match set must have {record_bytes} bytes (num_corr={num_corr}):", path)
        v = tf.io.decode_raw(raw, tf.float32, little_endian=True)
        idx0, idx1 = tf.cast(v[0], tf.int32), tf.cast(v[1], tf.int32)
        inliers = tf.minimum(tf.cast(v[2], tf.int32), rows)
        aff0 = tf.reshape(v[46:46 + n6], [num_corr, 6])[:rows]
        aff1 = tf.reshape(v[46 + n6:46 + 2 * n6], [num_corr, 6])[:rows]
        element_seed = tf.stack([tf.cast(seed, tf.int64), index])
        seeds = tf.random.experimental.stateless_split(element_seed, 3)
        image0, image1 = _decode_gray(tf.gather(image_paths, idx0)), _decode_gray(tf.gather(image_paths, idx1))
        if training and photometric:
            image0 = photometric_augmentation(image0, seeds[0])
            image1 = photometric_augmentation(image1, seeds[1])
        if training and perturb:
            p0, p1 = random_perturbation(rows, seeds[2])
        else:
            p0 = p1 = tf.eye(2, batch_shape=[rows]) * 0.5
        out = {
            "patches0": crop_keypoint_patches(image0, aff0, p0),
            "patches1": crop_keypoint_patches(image1, aff1, p1),
            "num_inliers": inliers,
            "keypoints0": tf.stack([aff0[:, 2], aff0[:, 5]], -1),
            "keypoints1": tf.stack([aff1[:, 2], aff1[:, 5]], -1),
        }
        if regional:
            shape = [regional_resolution, regional_resolution, regional_dim]
            for i, idx in (("0", idx0), ("1", idx1)):
                feat_path = tf.gather(regional_paths, idx)
                feat = tf.io.decode_raw(tf.io.read_file(feat_path), tf.float32, little_endian=True)
                feat = _checked(feat, tf.equal(tf.size(feat), int(np.prod(shape))),
                                f"regional feature file must hold {shape} float32 values:", feat_path)
                out["regional" + i] = tf.reshape(feat, shape)
        return out

    ds = ds.map(load, num_parallel_calls=workers, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=training)
    return ds.prefetch(2)
