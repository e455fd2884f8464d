"""tfmatch/data/gl3d_patches.py: the TFMatch patch crop against OpenCV, and the dataset on a tiny GL3D tree."""

import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tests.methods.geodesc import _patch_pairs as pp
from tfmatch.data import gl3d_io
from tfmatch.data import gl3d_patches as gp


def _image():
    return pp.gray_image("camera")[::4, ::4][:100, :120].copy()  # H=100, W=120


def test_crop_matches_opencv_on_symmetric_padded_image():
    image = _image()
    h, w = image.shape
    pad_y, pad_x = 10, 12
    padded = cv2.copyMakeBorder(image, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REFLECT)  # = tf SYMMETRIC
    hp, wp = padded.shape
    affines = np.array([[0.05, 0.01, 0.1, -0.02, 0.06, -0.2], [0.04, -0.03, -0.3, 0.03, 0.04, 0.25]], np.float32)
    perturbation = np.tile(0.5 * np.eye(2, dtype=np.float32), (2, 1, 1))
    patches = np.asarray(gp.crop_keypoint_patches(tf.constant(image[..., None]), affines, perturbation))
    for k, a in enumerate(affines):
        lin = np.array([[a[0], a[1]], [a[3], a[4]]]) @ perturbation[k]
        t = np.array([a[2] * w / wp, a[5] * h / hp])
        half = np.diag([wp / 2.0, hp / 2.0])
        # pixel = half (lin g + t + 1), g = -1 + 2 j / 31
        M = np.concatenate([half @ lin * (2.0 / 31.0), (half @ (t + 1.0 - lin @ [1.0, 1.0]))[:, None]], axis=1)
        ref = cv2.warpAffine(padded, M, (32, 32), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REPLICATE)
        np.testing.assert_allclose(patches[k, :, :, 0], ref, atol=0.5)


def test_patch_centre_is_the_keypoint_pixel():
    image = _image()
    affines = np.array([[0.05, 0.0, 0.1, 0.0, 0.05, -0.2]], np.float32)
    zero = np.zeros((1, 2, 2), np.float32)  # every grid point lands on the keypoint centre
    patch = np.asarray(gp.crop_keypoint_patches(tf.constant(image[..., None]), affines, zero))
    x, y = gl3d_io.affine_centres_to_pixels(affines, (image.shape[1], image.shape[0]))[0]
    x0, y0 = int(x), int(y)
    fx, fy = x - x0, y - y0
    expected = (image[y0, x0] * (1 - fx) * (1 - fy) + image[y0, x0 + 1] * fx * (1 - fy)
                + image[y0 + 1, x0] * (1 - fx) * fy + image[y0 + 1, x0 + 1] * fx * fy)
    np.testing.assert_allclose(patch, expected, atol=1e-3)


def test_random_perturbation_shares_the_large_angle():
    p0, p1 = gp.random_perturbation(500, tf.constant([1, 2], tf.int64))
    ang0 = np.degrees(np.arctan2(np.asarray(p0)[:, 0, 1], np.asarray(p0)[:, 0, 0]))
    ang1 = np.degrees(np.arctan2(np.asarray(p1)[:, 0, 1], np.asarray(p1)[:, 0, 0]))
    assert np.abs(ang0 - ang1).max() <= 10.0 + 1e-3 and np.abs(ang0).max() > 60  # +-90 shared, +-5 each
    det = np.linalg.det(np.asarray(p0))
    assert np.all(det > 0.25 * 2 ** -0.6 - 1e-6) and np.all(det < 0.25 * 2 ** 0.6 + 1e-6)


def _tiny_gl3d(root, num_corr=8, regional=(2, 16)):
    """2 scenes (train 'a', test 'b') x 2 images, one match set each (3 inliers of 8 rows), regional features."""
    rng = np.random.default_rng(0)
    images, regs = [], []
    for pid in ("a", "b"):
        os.makedirs(os.path.join(root, "data", pid, "undist_images"))
        os.makedirs(os.path.join(root, "data", pid, "match_sets"))
        os.makedirs(os.path.join(root, "data", pid, "reg_feat"))
        for i in range(2):
            rel = f"data/{pid}/undist_images/{i:08d}.jpg"
            cv2.imwrite(os.path.join(root, rel), (_image() * (0.6 + 0.3 * i)).astype(np.uint8))
            images.append(rel)
            reg = f"data/{pid}/reg_feat/{i:08d}.bin"
            rng.normal(size=(regional[0], regional[0], regional[1])).astype("<f4").tofile(os.path.join(root, reg))
            regs.append(reg)
    for s, pid in enumerate(("a", "b")):
        kpts = rng.uniform(-0.5, 0.5, (2, num_corr, 6)).astype(np.float32)
        kpts[..., [0, 4]] = 0.05
        kpts[..., [1, 3]] = 0.0
        payload = gl3d_io.pack_match_set(2 * s, 2 * s + 1, 3, (120, 100), (120, 100), np.eye(3), np.eye(3),
                                         np.eye(3), np.eye(3), np.zeros(3), kpts[0], kpts[1], np.ones(num_corr))
        with open(os.path.join(root, "data", pid, "match_sets", gl3d_io.match_set_name(0, 10, 5)), "wb") as f:
            f.write(payload)
        with open(os.path.join(root, "data", pid, "match_sets", gl3d_io.match_set_name(1, 10, 80)), "wb") as f:
            f.write(payload)  # orientation difference 80 > 60: filtered out
    folder = os.path.join(root, "list", "gl3d")
    os.makedirs(folder)
    files = {"image_index_offset.txt": "a 0 2\nb 2 4\n", "image_list.txt": "\n".join(images) + "\n",
             "depth_list.txt": "\n".join(p.replace("jpg", "pfm") for p in images) + "\n",
             "regional_feat_list.txt": "\n".join(regs) + "\n", "imageset_train.txt": "a\n", "imageset_test.txt": "b\n"}
    for name, text in files.items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
    with open(gl3d_io.split_marker_path(root, "gl3d"), "w") as f:
        json.dump({"format": gl3d_io.MATCH_SET_FORMAT, "num_corr": num_corr}, f)
    return root


def test_dataset_batches_on_a_tiny_gl3d(tmp_path):
    root = _tiny_gl3d(str(tmp_path))
    assert len(gp.match_set_files(root, "gl3d", "train")) == 1
    ds = gp.gl3d_patch_dataset("train", 2, gl3d_root=root, regional=True, regional_resolution=2, regional_dim=16,
                               num_pairs=6)
    batch = next(iter(ds))
    assert batch["patches0"].shape == (2, 6, 32, 32, 1) and batch["patches1"].dtype == tf.float32
    assert batch["regional1"].shape == (2, 2, 2, 16) and batch["keypoints0"].shape == (2, 6, 2)
    np.testing.assert_array_equal(batch["num_inliers"].numpy(), [3, 3])
    p = batch["patches0"].numpy()
    assert p.min() >= 0 and p.max() <= 255 and p.std() > 1
    # same seed, same batch; augmentation differs between the two repeats of the one file
    again = next(iter(gp.gl3d_patch_dataset("train", 2, gl3d_root=root, regional=True, regional_resolution=2,
                                            regional_dim=16, num_pairs=6)))
    np.testing.assert_array_equal(again["patches0"].numpy(), p)
    assert np.abs(p[0] - p[1]).mean() > 0.5
    test = list(gp.gl3d_patch_dataset("test", 4, gl3d_root=root))
    assert len(test) == 1 and test[0]["patches0"].shape == (1, 8, 32, 32, 1)  # one pass, no augmentation


def test_dataset_errors_name_the_problem(tmp_path):
    root = _tiny_gl3d(str(tmp_path))
    with pytest.raises(ValueError, match="num_corr=8"):
        gp.gl3d_patch_dataset("train", 2, gl3d_root=root, num_corr=1024)
    with pytest.raises(ValueError, match="split must be"):
        gp.gl3d_patch_dataset("val", 2, gl3d_root=root)
    ds = gp.gl3d_patch_dataset("train", 2, gl3d_root=root, regional=True, regional_resolution=3, regional_dim=16)
    with pytest.raises(tf.errors.InvalidArgumentError, match="regional feature file"):
        next(iter(ds))
