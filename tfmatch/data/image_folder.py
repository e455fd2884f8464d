"""Any folder of images (COCO layout works) with labels from Homographic Adaptation: SuperPoint pairs or
MagicPoint round-2 batches.

Images are found recursively under ``image_dir``, read as gray and resized to ``image_size`` (as
``data_tools.superpoint_export_labels`` does); labels are ``label_dir/<relative path without extension>.npz``
with ``pts [N,2]`` (x, y) and ``image_size`` (rescaled when the training size differs). Images without a label
file are left out and counted (a warning says how many). The split is a fixed hash of the relative path:
``validation_fraction`` of the images form ``val``/``test``.

Batches with ``pairs=True`` (SuperPoint): ``image0, image1 [B,H,W,1]`` float32 0..255 (photometric augmentation
on each), ``keypoint_map0, keypoint_map1 [B,H,W]``, ``valid_mask0, valid_mask1 [B,H,W]`` and ``homography [B,3,3]``
mapping image-0 pixels to image-1 pixels (the spec's warped-pair sampler, artifacts allowed, mask eroded by 3).
With ``pairs=False`` (MagicPoint on real images): ``image``, ``keypoint_map``, ``valid_mask`` after photometric and
homographic augmentation.
"""

from __future__ import annotations

import os
import zlib

import cv2
import gin
import numpy as np
from absl import logging

from tfmatch.data import homographies
from tfmatch.data.synthetic_shapes import photometric_augmentation

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp")
_SPLITS = ("train", "val", "test")


def _list(image_dir: str):
    if not image_dir or not os.path.isdir(image_dir):
        raise FileNotFoundError(f"image_folder.py: image_dir {image_dir!r} is not a directory (set IMAGE_DIR)")
    found = []
    for root, _, files in os.walk(image_dir, followlinks=True):
        for name in files:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(root, name), image_dir))
    return sorted(found)


class ImageFolder:
    """Index -> sample (NumPy); see the module docstring."""

    def __init__(self, image_dir: str, label_dir: str | None, split: str, image_size=(240, 320), seed: int = 0,
                 validation_fraction: float = 0.05, pairs: bool = True, photometric: bool = True,
                 erosion_radius: int = 3):
        if split not in _SPLITS:
            raise ValueError(f"image_folder.py: split must be one of {_SPLITS}, got {split!r}")
        self.image_dir, self.label_dir = image_dir, label_dir
        self.height, self.width = (int(s) for s in image_size)
        if self.height % 8 or self.width % 8:
            raise ValueError(f"image_folder.py: image_size must be multiples of 8, got {image_size}")
        self.split, self.seed, self.pairs = split, int(seed), bool(pairs)
        self.photometric = bool(photometric) and split == "train"
        self.erosion_radius = int(erosion_radius)
        in_val = lambda rel: (zlib.crc32(rel.encode()) % 10000) < validation_fraction * 10000  # noqa: E731
        files = [rel for rel in _list(image_dir) if in_val(rel) == (split != "train")]
        if label_dir:
            labelled = [rel for rel in files if os.path.isfile(self.label_path(rel))]
            if len(labelled) < len(files):
                logging.warning("image_folder.py: %d of %d %s images have no label in %s; they are left out",
                                len(files) - len(labelled), len(files), split, label_dir)
            files = labelled
        if not files:
            raise FileNotFoundError(f"image_folder.py: no {split} images in {image_dir}"
                                    + (f" with labels in {label_dir}" if label_dir else ""))
        self.files = files

    def __len__(self):
        return len(self.files)

    def label_path(self, rel: str) -> str:
        return os.path.join(self.label_dir, os.path.splitext(rel)[0] + ".npz")

    def _load(self, rel: str):
        path = os.path.join(self.image_dir, rel)
        image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise OSError(f"{path}: cannot decode image")
        image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA).astype(np.float32)
        points = np.zeros((0, 2), np.float32)
        if self.label_dir:
            label = self.label_path(rel)
            try:
                with np.load(label) as data:
                    points = np.asarray(data["pts"], np.float32).reshape(-1, 2)
                    size = np.asarray(data["image_size"]).reshape(2) if "image_size" in data else None
            except (OSError, KeyError, ValueError) as err:
                raise OSError(f"{label}: cannot read label ({err})") from err
            if size is not None and (size[0], size[1]) != (self.height, self.width):
                scale = np.array([self.width / size[1], self.height / size[0]], np.float32)
                points = (points + 0.5) * scale - 0.5
        return image, points

    def sample(self, index: int):
        rel = self.files[index % len(self.files)]
        image, points = self._load(rel)
        rng = np.random.default_rng([self.seed, int(index)])
        h, w = self.height, self.width
        if not self.pairs:
            mask = np.ones((h, w), np.float32)
            if self.photometric:
                image = photometric_augmentation(image, rng)
                hom = homographies.sample_homography(rng, h, w, homographies.MAGICPOINT_AUGMENTATION)
                image = homographies.warp_image(image, hom, h, w)
                points = homographies.warp_points(hom, points)
                mask = homographies.valid_mask(hom, h, w, h, w, 2)
            return (image.astype(np.float32), homographies.keypoint_map(points, h, w), mask)
        hom = homographies.sample_homography(rng, h, w, homographies.SUPERPOINT_PAIRS)
        image1 = homographies.warp_image(image, hom, h, w)
        points1 = homographies.warp_points(hom, points)
        mask1 = homographies.valid_mask(hom, h, w, h, w, self.erosion_radius)
        image0 = image
        if self.photometric:
            image0 = photometric_augmentation(image0, rng)
            image1 = photometric_augmentation(image1, rng)
        return (image0.astype(np.float32), image1.astype(np.float32), homographies.keypoint_map(points, h, w),
                homographies.keypoint_map(points1, h, w), np.ones((h, w), np.float32), mask1,
                hom.astype(np.float32))


@gin.configurable
def image_folder_dataset(split: str, global_batch_size: int, input_context=None, image_dir: str = gin.REQUIRED,
                         label_dir: str | None = None, image_size=(240, 320), pairs: bool = True, seed: int = 0,
                         validation_fraction: float = 0.05, photometric: bool = True,
                         num_parallel_calls: int | None = None, max_examples: int | None = None, processes: int = 0):
    """tf.data pipeline over an image folder (see the module docstring); infinite for ``split == "train"``.

    ``processes > 0``: the samples (decoding, warping, augmentation: numpy/OpenCV, which hold the GIL inside
    ``tf.data``) are made in that many worker processes, the same samples in the same order
    (``tfmatch/data/worker_pool.py``)."""
    import tensorflow as tf

    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    source = ImageFolder(image_dir, label_dir, split, image_size, seed, validation_fraction, pairs, photometric)
    h, w = source.height, source.width
    if processes < 0:
        raise ValueError(f"image_folder.py: processes must be >= 0, got {processes}")
    stop = None if split == "train" else (len(source) if max_examples is None else min(len(source), int(max_examples)))
    indices = tf.data.Dataset.counter() if stop is None else tf.data.Dataset.range(stop)
    batch_size = global_batch_size
    first, stride = 0, 1
    if input_context is not None:
        first, stride = input_context.input_pipeline_id, input_context.num_input_pipelines
        indices = indices.shard(stride, first)
        batch_size = input_context.get_per_replica_batch_size(global_batch_size)

    if pairs:
        names = ("image0", "image1", "keypoint_map0", "keypoint_map1", "valid_mask0", "valid_mask1", "homography")
        shapes = [(h, w)] * 6 + [(3, 3)]
    else:
        names = ("image", "keypoint_map", "valid_mask")
        shapes = [(h, w)] * 3

    options = tf.data.Options()
    options.deterministic = True
    if processes:
        from tfmatch.data.worker_pool import process_dataset

        args = (image_dir, label_dir, split, tuple(image_size), seed, validation_fraction, pairs, photometric)
        binary = {name: np.uint8 for name in names if name.startswith(("keypoint_map", "valid_mask"))}
        dataset = process_dataset(ImageFolder, args, names, shapes, processes, first, stride, stop, batch_size,
                                  drop_remainder=split == "train", transport=binary)
        return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)

    def load(index):
        values = tf.numpy_function(lambda i: source.sample(int(i)), [index], [tf.float32] * len(names),
                                   stateful=False)
        out = {}
        for name, value, shape in zip(names, values, shapes):
            value.set_shape(shape)
            out[name] = value[..., None] if name.startswith("image") else value
        return out

    dataset = indices.map(load, num_parallel_calls=num_parallel_calls or tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=split == "train")
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
