"""The synthetic GL3D generator, checked against geometry: layout, reprojection with the stored depth, epipolar
error of the match sets' essential matrices, determinism."""

import os

import cv2
import numpy as np

from tests.data.conftest import GL3D_NUM_CORR, GL3D_TINY
from tfmatch.data import gl3d_io as io


def _scene_ids(root):
    return [s.pid for s in io.read_split_lists(root, "gl3d").scenes]


def _bilinear(depth, pts):
    x0, y0 = np.floor(pts[:, 0]).astype(int), np.floor(pts[:, 1]).astype(int)
    fx, fy = pts[:, 0] - x0, pts[:, 1] - y0
    return (depth[y0, x0] * (1 - fx) * (1 - fy) + depth[y0, x0 + 1] * fx * (1 - fy)
            + depth[y0 + 1, x0] * (1 - fx) * fy + depth[y0 + 1, x0 + 1] * fx * fy)


def test_layout(gl3d_synthetic_root):
    root, size = gl3d_synthetic_root, GL3D_TINY["image_size"]
    lists = io.read_split_lists(root, "gl3d")
    n = GL3D_TINY["scenes"] * GL3D_TINY["images_per_scene"]
    assert len(lists.images) == len(lists.depths) == len(lists.regional_features) == n
    pids = _scene_ids(root)
    assert io.read_imageset(root, "gl3d", "test") == pids[-1:]
    assert io.read_imageset(root, "gl3d", "train") == pids[:-1]
    image = cv2.imread(os.path.join(root, lists.images[0]), cv2.IMREAD_GRAYSCALE)
    assert image.shape == (size, size) and image.std() > 20  # textured, not blank
    depth = io.read_pfm(os.path.join(root, lists.depths[0]))
    assert depth.shape == (size // 4, size // 4) and depth.min() > 0  # the back wall fills every view
    cams = io.read_cameras(os.path.join(root, "data", pids[0], "geolabel", "cameras.txt"))
    assert sorted(cams) == list(range(GL3D_TINY["images_per_scene"]))
    kpts = io.read_keypoints(os.path.join(root, "data", pids[0], "img_kpts", "00000000.bin"))
    assert kpts.shape[0] > GL3D_NUM_CORR and np.all(np.abs(kpts[:, [2, 5]]) <= 1)


def test_correspondences_reproject_within_one_pixel_with_stored_depth(gl3d_synthetic_root):
    root, size = gl3d_synthetic_root, GL3D_TINY["image_size"]
    checked = 0
    for pid in _scene_ids(root):
        scene = os.path.join(root, "data", pid)
        cams = io.read_cameras(os.path.join(scene, "geolabel", "cameras.txt"))
        records = io.read_corr(os.path.join(scene, "geolabel", "corr.bin"))
        assert records
        for rec in records:
            c0, c1 = cams[rec.idx0], cams[rec.idx1]
            # Stored image grid: x_S = (tx + 1) * S / 2, K_S = diag(S/W, S/H, 1) K.
            K0 = np.diag([size / c0.size[0], size / c0.size[1], 1]) @ c0.K
            K1 = np.diag([size / c1.size[0], size / c1.size[1], 1]) @ c1.K
            p0 = (rec.corr[:, [2, 5]] + 1) * size / 2
            p1 = (rec.corr[:, [8, 11]] + 1) * size / 2
            depth = io.read_pfm(os.path.join(scene, "depths", f"{rec.idx0:08d}.pfm"))
            z = _bilinear(depth, p0 / 4)  # depth pixel j <-> image pixel 4 j
            X0 = (np.c_[p0, np.ones(len(p0))] @ np.linalg.inv(K0).T) * z[:, None]
            R, t = io.relative_pose(c0.R, c0.t, c1.R, c1.t)
            x1 = (X0 @ R.T + t) @ K1.T
            error = np.linalg.norm(x1[:, :2] / x1[:, 2:] - p1, axis=1)
            assert error.max() < 1.0, (pid, rec.idx0, rec.idx1, error.max())
            # The feature indices point at the same keypoints.
            k0 = io.read_keypoints(os.path.join(scene, "img_kpts", f"{rec.idx0:08d}.bin"))
            np.testing.assert_array_equal(k0[rec.corr[:, 13].astype(int)], rec.corr[:, :6])
            checked += len(rec.corr)
    assert checked > 100


def test_match_set_essential_has_near_zero_epipolar_error(gl3d_root):
    pids = _scene_ids(gl3d_root)
    inlier_errors, padding_errors = [], []
    for pid in pids:
        folder = os.path.join(gl3d_root, "data", pid, "match_sets")
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".match_set"):
                continue
            m = io.read_match_set(os.path.join(folder, name), GL3D_NUM_CORR)
            F = np.linalg.inv(m["K1"]).T @ m["essential"] @ np.linalg.inv(m["K0"])
            x0 = np.c_[io.affine_centres_to_pixels(m["kpt_affine0"], m["image_size0"]), np.ones(GL3D_NUM_CORR)]
            x1 = np.c_[io.affine_centres_to_pixels(m["kpt_affine1"], m["image_size1"]), np.ones(GL3D_NUM_CORR)]
            Fx0, Ftx1 = x0 @ F.T, x1 @ F
            sampson = np.sum(x1 * Fx0, 1) ** 2 / (Fx0[:, 0] ** 2 + Fx0[:, 1] ** 2 + Ftx1[:, 0] ** 2 + Ftx1[:, 1] ** 2)
            n = m["num_inliers"]
            inlier_errors.append(np.sqrt(sampson[:n]))
            padding_errors.append(np.sqrt(sampson[n:]))
    inliers, padding = np.concatenate(inlier_errors), np.concatenate(padding_errors)
    # Original-camera pixels are up to 1280 / 256 = 5x the stored ones, where matches lie within 1 px.
    assert np.percentile(inliers, 99) < 5.0 and np.median(inliers) < 1.5, np.percentile(inliers, [50, 99])
    assert padding.size and np.median(padding) > 20.0  # padding rows do not correspond


def test_generation_is_deterministic(tmp_path):
    from data_tools import make_synthetic_gl3d

    a = make_synthetic_gl3d.generate_scene(str(tmp_path / "a"), 3, 1, 2, 128, 200)
    b = make_synthetic_gl3d.generate_scene(str(tmp_path / "b"), 3, 1, 2, 128, 200)
    assert a == b
    for sub in ("geolabel/corr.bin", "geolabel/cameras.txt", "img_kpts/00000001.bin", "depths/00000000.pfm",
                "undist_images/00000001.jpg"):
        with open(tmp_path / "a" / "data" / a / sub, "rb") as fa, open(tmp_path / "b" / "data" / b / sub, "rb") as fb:
            assert fa.read() == fb.read(), sub


def test_rerun_is_a_no_op_and_other_arguments_are_refused(gl3d_synthetic_root, gl3d_copy):
    import pytest
    from data_tools import make_synthetic_gl3d

    root = gl3d_copy(gl3d_synthetic_root)
    before = os.path.getmtime(os.path.join(root, "list", "gl3d", "image_list.txt"))
    make_synthetic_gl3d.generate(root, **GL3D_TINY)
    assert os.path.getmtime(os.path.join(root, "list", "gl3d", "image_list.txt")) == before
    with pytest.raises(ValueError, match="pass --regenerate"):
        make_synthetic_gl3d.generate(root, **dict(GL3D_TINY, seed=1))
