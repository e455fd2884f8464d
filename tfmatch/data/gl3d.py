"""tf.data inputs on GL3D match sets (TFMatch's reader), for ASLFeat (dense pairs) and the patch methods.

Match sets are built first by ``python -m data_tools.gl3d_match_sets`` (format: ``docs/data_formats.md``); the
split marker it writes records ``num_corr``, so the record size is never guessed. Two entry points:

- ``gl3d_pair_dataset``: unbatched per-sample dicts at full resolution (the base that the patch pipeline in
  ``gl3d_patches.py`` builds on);
- ``gl3d_dense_dataset``: ASLFeat's batches (``docs/developing.md``, "GL3D batches").

Both are deterministic for a given seed: shuffling uses the seed, and every sample carries a stateless
``sample_seed`` drawn from (seed, input pipeline, position in the stream) for its augmentation.

Reading, decoding, resizing and augmentation are TF ops only (no ``numpy_function``/``py_function``): Python code
in a map holds the GIL, so the parallel map calls would queue for it and the pipeline would not scale with cores.
"""

from __future__ import annotations

import os

import gin
import numpy as np
import tensorflow as tf

from tfmatch.data import gl3d_io
from tfmatch.data.gl3d_io import GL3DFormatError

_TEST_SUBSETS = ("test", "val", "validation", "eval")  # GL3D has no validation split: all read imageset_test


def _subset(split: str) -> str:
    if split == "train":
        return "train"
    if split in _TEST_SUBSETS:
        return "test"
    raise ValueError(f"split must be 'train' or one of {_TEST_SUBSETS}, got {split!r}")


def list_match_sets(gl3d_root: str, data_split: str = "gl3d", subset: str = "train", min_rotation_deg: int = 3,
                    max_orientation_change_deg: int = 60) -> tuple[list[str], int]:
    """Match-set files of the scenes of ``list/<data_split>/imageset_<subset>.txt`` that pass TFMatch's filter.

    Returns ``(files, num_corr)``: sorted paths (shuffling is the pipeline's job) and the num_corr recorded by
    the match-set tool. Checks the completion markers and every file's size.
    """
    marker_path = gl3d_io.split_marker_path(gl3d_root, data_split)
    marker = gl3d_io.read_marker(marker_path)
    if marker is None:
        raise GL3DFormatError(
            f"{marker_path}: match sets of split {data_split!r} are missing or incomplete; run "
            f"python -m data_tools.gl3d_match_sets --gl3d {gl3d_root} --split {data_split}")
    num_corr = int(marker["num_corr"])
    record_bytes = gl3d_io.match_set_bytes(num_corr)
    files = []
    for pid in gl3d_io.read_imageset(gl3d_root, data_split, subset):
        scene_marker_path = gl3d_io.scene_marker_path(gl3d_root, pid)
        scene_marker = gl3d_io.read_marker(scene_marker_path)
        if scene_marker is None or scene_marker["num_corr"] != num_corr:
            raise GL3DFormatError(f"{scene_marker_path}: scene {pid} has no complete match sets for "
                                  f"num_corr={num_corr}; rerun data_tools.gl3d_match_sets")
        folder = os.path.dirname(scene_marker_path)
        scene_files = []
        for name in os.listdir(folder):
            if not name.endswith(".match_set"):
                continue
            k, rotation, orientation = gl3d_io.parse_match_set_name(name)
            if rotation < min_rotation_deg or orientation > max_orientation_change_deg:
                continue
            path = os.path.join(folder, name)
            size = os.path.getsize(path)
            if size != record_bytes:
                raise GL3DFormatError(f"{path}: expected {record_bytes} bytes per record (num_corr={num_corr}), "
                                      f"file has {size}")
            scene_files.append((k, path))
        files += [path for _, path in sorted(scene_files)]
    return files, num_corr


def _checked(value: tf.Tensor, condition: tf.Tensor, message: tf.Tensor) -> tf.Tensor:
    """``value`` once ``condition`` holds, else InvalidArgumentError with ``message`` (a string naming the file)."""
    with tf.control_dependencies([tf.debugging.Assert(condition, [message])]):
        return tf.identity(value)


def _with_path(path: tf.Tensor, *parts) -> tf.Tensor:
    return tf.strings.join([path, ": "] + [p if isinstance(p, str) else tf.strings.as_string(p) for p in parts])


def load_gray_image(path: tf.Tensor) -> tf.Tensor:
    """Decodes an image file to ``[H, W, 1] uint8`` (a JPEG's luma plane, as TFMatch's ``decode_jpeg(channels=1)``).

    A missing file, or a ``.jpg``/``.jpeg`` without JPEG start or end markers (truncated), raises an error naming the
    file; a JPEG damaged inside, which libjpeg rejects, raises TensorFlow's "Invalid JPEG data" without the name.
    """
    data = tf.io.read_file(path)
    # libjpeg only warns about a missing end marker and returns a grey-filled image: check the markers ourselves.
    tail = tf.io.decode_raw(tf.strings.substr(data, tf.maximum(tf.strings.length(data) - 1024, 0), 1024), tf.uint8)
    has_end = tf.reduce_any((tail[:-1] == 0xFF) & (tail[1:] == 0xD9))
    is_jpeg_name = tf.strings.regex_full_match(tf.strings.lower(path), r".*\.jpe?g")
    jpeg_ok = tf.logical_and(tf.equal(tf.strings.substr(data, 0, 3), b"\xff\xd8\xff"), has_end)  # SOI + a marker
    data = _checked(data, tf.logical_or(tf.logical_not(is_jpeg_name), jpeg_ok),
                    _with_path(path, "corrupt or truncated JPEG (no start or end marker)"))
    image = tf.io.decode_image(data, channels=1, dtype=tf.uint8, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 1])


_PFM_NUMBER = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"


def load_depth(path: tf.Tensor) -> tf.Tensor:
    """Reads a PFM depth map (``Pf``, or channel 0 of ``PF``), flipped to top-down rows as TFMatch's ``load_pfm``:
    ``[h, w] float32``, 0 = no depth. A malformed or truncated file, or NaN/Inf depth, raise an error naming it.
    """
    data = tf.io.read_file(path)
    # Header: "Pf\n<w> <h>\n<scale>\n" (scale < 0: little-endian), then the rows bottom-up.
    lines = tf.strings.split(tf.strings.substr(data, 0, 256), "\n", maxsplit=3)
    lines = tf.concat([lines, ["", "", ""]], 0)  # a short file fails the checks below instead of the indexing
    magic = tf.strings.strip(lines[0])
    is_pfm = (tf.size(lines) >= 7) & ((magic == "Pf") | (magic == "PF"))
    size_line = _checked(lines[1], is_pfm, _with_path(path, "not a PFM file"))
    size_line = _checked(size_line, tf.strings.regex_full_match(size_line, r"\d+\s+\d+\s*"),
                         _with_path(path, "malformed PFM size line"))
    width_height = tf.strings.to_number(tf.strings.split(tf.strings.strip(size_line)), tf.int32)
    width, height = width_height[0], width_height[1]
    scale_line = tf.strings.strip(lines[2])
    scale_line = _checked(scale_line, tf.strings.regex_full_match(scale_line, _PFM_NUMBER),
                          _with_path(path, "malformed PFM scale line"))
    channels = tf.where(magic == "PF", 3, 1)
    header_bytes = tf.strings.length(lines[0]) + tf.strings.length(lines[1]) + tf.strings.length(lines[2]) + 3
    expected, available = width * height * channels * 4, tf.strings.length(data) - header_bytes
    body = _checked(tf.strings.substr(data, header_bytes, expected), available >= expected,
                    _with_path(path, "truncated PFM, ", width, "x", height, "x", channels, " needs ", expected,
                               " bytes of data, file has ", available))
    values = tf.cond(tf.strings.to_number(scale_line) < 0,
                     lambda: tf.io.decode_raw(body, tf.float32, little_endian=True),
                     lambda: tf.io.decode_raw(body, tf.float32, little_endian=False))
    depth = tf.reverse(tf.reshape(values, [height, width, channels])[:, :, 0], axis=[0])  # stored bottom row first
    depth = _checked(depth, tf.reduce_all(tf.math.is_finite(depth)), _with_path(path, "depth contains NaN or Inf"))
    return tf.ensure_shape(depth, [None, None])


def resize_bilinear_legacy(images: tf.Tensor, size: int) -> tf.Tensor:
    """TF1's ``resize_bilinear`` (corner-aligned: output pixel i samples input i * in/out), as TFMatch.

    Shape: ``[H, W, C]`` -> ``[size, size, C]`` float32.
    """
    out = tf.compat.v1.image.resize_bilinear(images[None], [size, size], align_corners=False,
                                             half_pixel_centers=False)
    return out[0]


def parse_match_set_record(record: tf.Tensor, file_num_corr: int, num_corr: int | None = None) -> dict:
    """Decodes one match-set record (a scalar string of ``match_set_bytes(file_num_corr)`` bytes).

    ``num_corr <= file_num_corr`` keeps the first rows (the true correspondences come first), as TFMatch's
    ``use_corr_n``. Returns: ``index0, index1 [] int32`` (global image indices), ``num_inliers [] int32``,
    ``image_size0/1 [2]`` (W, H of the original camera), ``K0, K1 [3,3]`` (original resolution),
    ``essential [3,3]``, ``R_0to1 [3,3]``, ``t_0to1 [3]``, ``kpt_affine0/1 [num_corr, 6]``, ``geo_sim [num_corr]``.
    """
    num_corr = file_num_corr if num_corr is None else num_corr
    if not 0 < num_corr <= file_num_corr:
        raise ValueError(f"num_corr must be in 1..{file_num_corr} (the match sets' num_corr), got {num_corr}")
    v = tf.io.decode_raw(record, tf.float32, little_endian=True)
    v = tf.ensure_shape(v, [gl3d_io.match_set_floats(file_num_corr)])
    n6 = 6 * file_num_corr
    pose = tf.reshape(v[34:46], [3, 4])
    return {
        "index0": tf.cast(v[0], tf.int32), "index1": tf.cast(v[1], tf.int32),
        "num_inliers": tf.minimum(tf.cast(v[2], tf.int32), num_corr),
        "image_size0": v[3:5], "image_size1": v[5:7],
        "K0": tf.reshape(v[7:16], [3, 3]), "K1": tf.reshape(v[16:25], [3, 3]),
        "essential": tf.reshape(v[25:34], [3, 3]), "R_0to1": pose[:, :3], "t_0to1": pose[:, 3],
        "kpt_affine0": tf.reshape(v[46:46 + n6], [file_num_corr, 6])[:num_corr],
        "kpt_affine1": tf.reshape(v[46 + n6:46 + 2 * n6], [file_num_corr, 6])[:num_corr],
        "geo_sim": v[46 + 2 * n6:][:num_corr],
    }


def gl3d_pair_dataset(split: str, gl3d_root: str, data_split: str = "gl3d", num_corr: int | None = None,
                      seed: int = 0, input_context: tf.distribute.InputContext | None = None,
                      shuffle: bool | None = None, repeat: bool | None = None, min_rotation_deg: int = 3,
                      max_orientation_change_deg: int = 60,
                      num_parallel_calls: int = tf.data.AUTOTUNE) -> tf.data.Dataset:
    """Unbatched GL3D pairs at full resolution, read with ``FixedLengthRecordDataset``.

    ``split``: ``"train"`` (imageset_train; shuffled with ``seed`` and repeated by default) or ``"test"``.
    With an ``input_context`` the match-set files are sharded by input pipeline.

    Each element: the fields of ``parse_match_set_record`` plus
    ``image0, image1 [H, W, 1] float32`` in 0..255 (grayscale, as stored: 1000x1000 on GL3D),
    ``depth0, depth1 [h, w] float32`` (as stored: 250x250, 0 = no depth), ``image_path0/1, depth_path0/1 []
    string``, ``sample_seed [2] int64`` (a stateless seed for this sample's augmentation).
    """
    def load_full_resolution(sample):
        for k in ("0", "1"):
            sample["image" + k] = tf.cast(load_gray_image(sample["image_path" + k]), tf.float32)
            sample["depth" + k] = load_depth(sample["depth_path" + k])
        return sample

    return _map_pairs(load_full_resolution, split, gl3d_root, data_split, num_corr, seed, input_context, shuffle,
                      repeat, min_rotation_deg, max_orientation_change_deg, num_parallel_calls)


def _map_pairs(load, split, gl3d_root, data_split, num_corr, seed, input_context, shuffle, repeat,
               min_rotation_deg, max_orientation_change_deg, num_parallel_calls) -> tf.data.Dataset:
    """The match-set records of ``split`` (arguments of ``gl3d_pair_dataset``) mapped by ``load(sample)``, one
    parallel map for record parsing and pixels; ``sample``: the fields of ``parse_match_set_record``,
    ``image_path0/1, depth_path0/1`` and ``sample_seed``."""
    subset = _subset(split)
    files, file_num_corr = list_match_sets(gl3d_root, data_split, subset, min_rotation_deg,
                                           max_orientation_change_deg)
    if not files:
        raise GL3DFormatError(f"{os.path.join(gl3d_root, 'list', data_split)}: no match sets pass the filters for "
                              f"imageset_{subset}.txt")
    lists = gl3d_io.read_split_lists(gl3d_root, data_split)
    image_paths = tf.constant([os.path.join(gl3d_root, p) for p in lists.images])
    depth_paths = tf.constant([os.path.join(gl3d_root, p) for p in lists.depths])
    shuffle = (subset == "train") if shuffle is None else shuffle
    repeat = (subset == "train") if repeat is None else repeat

    pipeline_id, num_pipelines = 0, 1
    file_ds = tf.data.Dataset.from_tensor_slices(files)
    if input_context is not None and input_context.num_input_pipelines > 1:
        pipeline_id, num_pipelines = input_context.input_pipeline_id, input_context.num_input_pipelines
        if len(files) < num_pipelines:
            raise ValueError(f"{len(files)} match sets cannot be sharded over {num_pipelines} input pipelines")
        file_ds = file_ds.shard(num_pipelines, pipeline_id)
    if shuffle:
        file_ds = file_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        file_ds = file_ds.repeat()
    records = tf.data.FixedLengthRecordDataset(file_ds, gl3d_io.match_set_bytes(file_num_corr))
    stream_seed = tf.constant(seed * 1_000_003 + pipeline_id, tf.int64)

    def parse(position, record):
        sample = parse_match_set_record(record, file_num_corr, num_corr)
        for k in ("0", "1"):
            sample["image_path" + k] = tf.gather(image_paths, sample["index" + k])
            sample["depth_path" + k] = tf.gather(depth_paths, sample["index" + k])
        sample["sample_seed"] = tf.stack([stream_seed, position])
        return load(sample)

    ds = records.enumerate().map(parse, num_parallel_calls=num_parallel_calls, deterministic=True)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)


_BLUR_KERNELS = None


def _motion_blur_kernels() -> np.ndarray:
    """[5, 3, 3]: identity (kernel size 1), then size-3 lines h, v, diagonal down, diagonal up times a Gaussian
    of variance k^2/16, normalised (TFMatch's motion blur with kernel size 1 or 3)."""
    global _BLUR_KERNELS
    if _BLUR_KERNELS is None:
        k, c = 3, 1
        lines = [np.zeros((k, k)), np.zeros((k, k)), np.eye(k), np.flip(np.eye(k), 0)]
        lines[0][c, :] = 1.0
        lines[1][:, c] = 1.0
        grid = np.repeat(np.arange(k)[:, None], k, axis=1)
        gaussian = np.exp(-((grid - c) ** 2 + (grid.T - c) ** 2) / (2.0 * k * k / 16.0))
        identity = np.zeros((k, k))
        identity[c, c] = 1.0
        kernels = [identity] + [line * gaussian / np.sum(line * gaussian) for line in lines]
        _BLUR_KERNELS = np.stack(kernels).astype(np.float32)
    return _BLUR_KERNELS


def photometric_parameters(seed: tf.Tensor) -> dict:
    """Draws the parameters of ``photometric_augment`` from a stateless ``seed [2]`` (int32 or int64).

    Returns ``delta []`` (brightness, U(-50, 50)), ``factor []`` (contrast, U(0.3, 1.5)), ``kernel_index [] int32``
    (row of ``_motion_blur_kernels()``: 0 = kernel size 1 with probability 1/2, else one of the 4 directions) and
    ``order [3] int32`` (a uniform permutation of brightness 0, contrast 1, blur 2).
    """
    u = tf.random.stateless_uniform([7], seed)
    blur = tf.cast(u[2] < 0.5, tf.int32)  # TFMatch: kernel size randint(0, 2) * 2 + 1
    direction = tf.minimum(tf.cast(u[3] * 4.0, tf.int32), 3)
    return {"delta": u[0] * 100.0 - 50.0, "factor": u[1] * 1.2 + 0.3, "kernel_index": blur * (1 + direction),
            "order": tf.argsort(u[4:])}


def _correlate_3x3(image: tf.Tensor, kernel: np.ndarray) -> tf.Tensor:
    """OpenCV's ``filter2D`` with a constant 3x3 ``kernel`` and its default border (reflect-101), as a sum of the
    kernel's non-zero taps over shifted slices: in a tf.data map this is several times faster than a one-channel
    ``conv2d`` or ``depthwise_conv2d`` (a motion-blur line has 3 taps of 9).

    Shape: ``image [H, W, C]`` -> ``[H, W, C]``.
    """
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    padded = tf.pad(image, [[1, 1], [1, 1], [0, 0]], mode="REFLECT")  # TF's REFLECT is OpenCV's reflect-101
    out = None
    for ky, kx in zip(*np.nonzero(kernel)):
        tap = float(kernel[ky, kx]) * padded[ky:ky + height, kx:kx + width]
        out = tap if out is None else out + tap
    return out


def apply_photometric(image: tf.Tensor, delta: tf.Tensor, factor: tf.Tensor, kernel_index: tf.Tensor,
                      order: tf.Tensor) -> tf.Tensor:
    """Brightness (+ delta), contrast (around the image mean, times factor) and motion blur (3x3 kernel
    ``_motion_blur_kernels()[kernel_index]``, OpenCV's default border reflect-101 as the original) in ``order``,
    each followed by clipping to [0, 255].

    Shape: ``image [H, W, 1] float32`` -> ``[H, W, 1]``.
    """
    kernels = _motion_blur_kernels()
    kernel_index, order = tf.convert_to_tensor(kernel_index, tf.int32), tf.convert_to_tensor(order, tf.int32)

    def brightness(x):
        return tf.clip_by_value(x + delta, 0.0, 255.0)

    def contrast(x):
        mean = tf.reduce_mean(x)
        return tf.clip_by_value((x - mean) * factor + mean, 0.0, 255.0)

    def blur(x):
        # Index 0 is the identity (kernel size 1, half the draws): nothing to compute.
        lines = [lambda k=k: tf.clip_by_value(_correlate_3x3(x, kernels[k]), 0.0, 255.0)
                 for k in range(1, len(kernels))]
        return tf.switch_case(kernel_index, [lambda: x] + lines)

    x = tf.cast(image, tf.float32)
    for step in range(3):
        x = tf.switch_case(order[step], [lambda x=x: brightness(x), lambda x=x: contrast(x), lambda x=x: blur(x)])
    return tf.ensure_shape(x, image.shape)


def photometric_augment(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """TFMatch's photometric augmentation: brightness (+-50), contrast ([0.3, 1.5]) and motion blur (kernel 1 or
    3, one of 4 directions) in a random order, each followed by clipping to [0, 255].

    Deterministic: the parameters come from ``photometric_parameters(seed)``. TF ops only (no numpy_function),
    so parallel map calls do not queue for the GIL.

    Shape: ``image [H, W, 1] float32`` in 0..255, ``seed [2] int64`` -> ``[H, W, 1]``.
    """
    return apply_photometric(image, **photometric_parameters(seed))


def scale_intrinsics_to_grid(K: tf.Tensor, image_size: tf.Tensor, grid_size: int) -> tf.Tensor:
    """K of the original camera -> K of the ``grid_size`` square resize (row 0 times S/W, row 1 times S/H)."""
    scale = tf.stack([grid_size / image_size[0], grid_size / image_size[1], tf.ones([], K.dtype)])
    return K * scale[:, None]


def affine_to_grid_points(kpt_affine: tf.Tensor, grid_size: int) -> tf.Tensor:
    """Normalised affines ``[N, 6]`` -> keypoint positions ``[N, 2]`` (x, y) in the ``grid_size`` square grid."""
    return (tf.stack([kpt_affine[:, 2], kpt_affine[:, 5]], axis=-1) + 1.0) * (grid_size / 2.0)


@gin.configurable
def gl3d_dense_dataset(split: str, global_batch_size: int, input_context: tf.distribute.InputContext | None = None,
                       gl3d_root: str | None = None, image_size: int = 480, num_corr: int = 1024,
                       photometric_augmentation: bool = True, seed: int = 0, data_split: str = "gl3d",
                       min_rotation_deg: int = 3, max_orientation_change_deg: int = 60,
                       num_parallel_calls: int = tf.data.AUTOTUNE) -> tf.data.Dataset:
    """ASLFeat's dense GL3D pairs, batched per replica (``docs/developing.md``, "GL3D batches").

    Images and depths are resized to ``image_size`` squares with TF1's legacy bilinear resize (as TFMatch; depth
    bilinearly too, 0 = no depth); photometric augmentation only for ``split == "train"``; images are not
    standardised (the model does that). ``split == "train"`` repeats forever.

    Shape: ``image0, image1 [B,S,S,1] float32 0..255``, ``depth0, depth1 [B,S,S]``, ``K0, K1 [B,3,3]`` (for the
    S grid), ``R_0to1 [B,3,3]``, ``t_0to1 [B,3]`` (x1 = R x0 + t), ``essential [B,3,3]``,
    ``keypoints0, keypoints1 [B,num_corr,2]`` (x, y in the S grid; rows < num_inliers correspond),
    ``num_inliers [B] int32``.
    """
    if gl3d_root is None:
        raise ValueError("gl3d_dense_dataset: gl3d_root is not set (bind GL3D_ROOT in the gin config)")
    if image_size <= 0 or global_batch_size <= 0:
        raise ValueError(f"image_size and global_batch_size must be > 0, got {image_size} and {global_batch_size}")
    batch_size = (input_context.get_per_replica_batch_size(global_batch_size) if input_context is not None
                  else global_batch_size)
    augment = photometric_augmentation and _subset(split) == "train"

    def to_dense(sample):
        out = {}
        seeds = tf.random.experimental.stateless_split(sample["sample_seed"], 2)
        for i, k in enumerate(("0", "1")):
            # Decoded at full size: libjpeg's half-size decode (ratio 2) saves only 5-10 % of the decode (the
            # entropy decoding dominates), and it shifts pixels by a quarter output pixel; the resampler that undoes
            # the shift exactly (crop_and_resize) costs more than the decode saves (docs/benchmarks.md, GL3D).
            image = resize_bilinear_legacy(tf.cast(load_gray_image(sample["image_path" + k]), tf.float32),
                                           image_size)
            if augment:
                image = photometric_augment(image, seeds[i])
            out["image" + k] = image
            depth = load_depth(sample["depth_path" + k])
            out["depth" + k] = resize_bilinear_legacy(depth[..., None], image_size)[..., 0]
            out["K" + k] = scale_intrinsics_to_grid(sample["K" + k], sample["image_size" + k], image_size)
            out["keypoints" + k] = affine_to_grid_points(sample["kpt_affine" + k], image_size)
        for key in ("R_0to1", "t_0to1", "essential", "num_inliers"):
            out[key] = sample[key]
        return out

    ds = _map_pairs(to_dense, split, gl3d_root, data_split, num_corr, seed, input_context, None, None,
                    min_rotation_deg, max_orientation_change_deg, num_parallel_calls)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
