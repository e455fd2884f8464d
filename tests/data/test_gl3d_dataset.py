"""tfmatch.data.gl3d: the batch contract, geometry through the pipeline, determinism, sharding, bad input."""

import itertools
import os

import cv2
import gin
import numpy as np
import pytest
import tensorflow as tf

from tests.data.conftest import GL3D_NUM_CORR, GL3D_TINY
from tfmatch.data import gl3d, gl3d_io

DENSE_KEYS = {"image0", "image1", "depth0", "depth1", "K0", "K1", "R_0to1", "t_0to1", "essential", "keypoints0",
              "keypoints1", "num_inliers"}


def _first(ds, n=1):
    return [{k: v.numpy() for k, v in b.items()} for b in ds.take(n)]


def _bilinear(depth, pts):
    x0, y0 = np.floor(pts[:, 0]).astype(int), np.floor(pts[:, 1]).astype(int)
    ok = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < depth.shape[1]) & (y0 + 1 < depth.shape[0])
    x0, y0 = np.clip(x0, 0, depth.shape[1] - 2), np.clip(y0, 0, depth.shape[0] - 2)
    fx, fy = pts[:, 0] - x0, pts[:, 1] - y0
    n = np.stack([depth[y0, x0], depth[y0, x0 + 1], depth[y0 + 1, x0], depth[y0 + 1, x0 + 1]], 1)
    value = n[:, 0] * (1 - fx) * (1 - fy) + n[:, 1] * fx * (1 - fy) + n[:, 2] * (1 - fx) * fy + n[:, 3] * fx * fy
    return value, ok & (n.min(1) > 0)


def test_dense_batches_follow_the_contract(gl3d_root):
    size = 96
    ds = gl3d.gl3d_dense_dataset("train", 2, gl3d_root=gl3d_root, image_size=size, num_corr=GL3D_NUM_CORR)
    assert set(ds.element_spec) == DENSE_KEYS
    shapes = {k: tuple(v.shape) for k, v in ds.element_spec.items()}
    assert shapes["image0"] == (2, size, size, 1) and shapes["depth1"] == (2, size, size)
    assert shapes["keypoints0"] == (2, GL3D_NUM_CORR, 2) and shapes["K0"] == (2, 3, 3)
    assert shapes["t_0to1"] == (2, 3) and shapes["num_inliers"] == (2,)
    assert ds.element_spec["num_inliers"].dtype == tf.int32
    batches = _first(ds, 12)  # more batches than the train split has pairs: it repeats
    for b in batches:
        assert 0 <= b["image0"].min() and b["image0"].max() <= 255 and b["image0"].std() > 5
        assert b["depth0"].min() >= 0 and b["depth0"].max() > 0
        assert np.all(b["num_inliers"] > 0) and np.all(b["num_inliers"] <= GL3D_NUM_CORR)
        assert np.all((b["keypoints0"] >= 0) & (b["keypoints0"] <= size))
    # The test split is not augmented, not repeated, and reads only the test scene.
    test = list(gl3d.gl3d_pair_dataset("test", gl3d_root).map(lambda s: s["index0"]).as_numpy_iterator())
    test_scene = gl3d_io.read_split_lists(gl3d_root, "gl3d").scenes[-1]
    assert test and all(test_scene.start <= i < test_scene.end for i in test)


def test_keypoints_depth_intrinsics_and_pose_agree(gl3d_root):
    """Warping keypoints0 with depth0, K0, R, t, K1 lands on keypoints1 (known answer for the whole reader)."""
    size = GL3D_TINY["image_size"]
    ds = gl3d.gl3d_dense_dataset("test", 1, gl3d_root=gl3d_root, image_size=size, num_corr=GL3D_NUM_CORR)
    errors = []
    for b in _first(ds, 4):
        n = b["num_inliers"][0]
        p0, p1 = b["keypoints0"][0, :n], b["keypoints1"][0, :n]
        z, ok = _bilinear(b["depth0"][0], p0)
        X = (np.c_[p0, np.ones(n)] @ np.linalg.inv(b["K0"][0]).T) * z[:, None]
        x1 = (X @ b["R_0to1"][0].T + b["t_0to1"][0]) @ b["K1"][0].T
        errors.append(np.linalg.norm(x1[:, :2] / x1[:, 2:] - p1, axis=1)[ok])
        # The essential matrix agrees with the pose: x1^T K1^-T E K0^-1 x0 ~ 0.
        F = np.linalg.inv(b["K1"][0]).T @ b["essential"][0] @ np.linalg.inv(b["K0"][0])
        h0, h1 = np.c_[p0, np.ones(n)], np.c_[p1, np.ones(n)]
        line = h0 @ F.T
        assert np.median(np.abs(np.sum(h1 * line, 1)) / np.linalg.norm(line[:, :2], axis=1)) < 0.5
    errors = np.concatenate(errors)
    assert errors.size > 50 and np.median(errors) < 0.5, np.percentile(errors, [50, 90])


def test_same_seed_same_batches_other_seed_other_batches(gl3d_root):
    def make(seed):
        return gl3d.gl3d_dense_dataset("train", 2, gl3d_root=gl3d_root, image_size=64, num_corr=32, seed=seed)

    a, b, c = _first(make(0), 3), _first(make(0), 3), _first(make(1), 3)
    for x, y in zip(a, b):
        for key in DENSE_KEYS:
            np.testing.assert_array_equal(x[key], y[key])
    assert any(not np.array_equal(x["image0"], y["image0"]) for x, y in zip(a, c))
    assert a[0]["keypoints0"].shape == (2, 32, 2) and np.all(a[0]["num_inliers"] <= 32)
    with pytest.raises(ValueError, match=f"num_corr must be in 1..{GL3D_NUM_CORR}"):
        gl3d.gl3d_dense_dataset("train", 2, gl3d_root=gl3d_root, num_corr=GL3D_NUM_CORR + 1)


def test_input_pipelines_read_disjoint_shards(gl3d_root):
    def indices(ctx):
        ds = gl3d.gl3d_dense_dataset("test", 2, input_context=ctx, gl3d_root=gl3d_root, image_size=32, num_corr=8)
        return [tuple(t) for b in ds.as_numpy_iterator() for t in zip(b["t_0to1"][:, 0], b["t_0to1"][:, 1])]

    contexts = [tf.distribute.InputContext(2, i, 2) for i in range(2)]
    shard0, shard1 = indices(contexts[0]), indices(contexts[1])
    assert contexts[0].get_per_replica_batch_size(2) == 1
    files, _ = gl3d.list_match_sets(gl3d_root, "gl3d", "test")
    assert len(shard0) + len(shard1) == len(files) and not set(shard0) & set(shard1)


def test_pair_dataset_gives_full_resolution_samples_with_affines(gl3d_root):
    sample = next(iter(gl3d.gl3d_pair_dataset("train", gl3d_root, seed=3)))
    size = GL3D_TINY["image_size"]
    assert sample["image0"].shape == (size, size, 1) and sample["depth1"].shape == (size // 4, size // 4)
    assert sample["kpt_affine0"].shape == (GL3D_NUM_CORR, 6) and sample["sample_seed"].shape == (2,)
    path = sample["image_path0"].numpy().decode()
    assert os.path.isfile(path) and path.endswith(".jpg")
    m = gl3d_io.read_match_set(_find_match_set(gl3d_root, sample), GL3D_NUM_CORR)
    np.testing.assert_array_equal(sample["kpt_affine1"].numpy(), m["kpt_affine1"])
    np.testing.assert_array_equal(sample["K0"].numpy(), m["K0"])


def _find_match_set(root, sample):
    i0, i1 = int(sample["index0"]), int(sample["index1"])
    for pid in os.listdir(os.path.join(root, "data")):
        folder = os.path.join(root, "data", pid, "match_sets")
        for name in os.listdir(folder):
            if name.endswith(".match_set"):
                m = gl3d_io.read_match_set(os.path.join(folder, name), GL3D_NUM_CORR)
                if (m["index0"], m["index1"]) == (i0, i1):
                    return os.path.join(folder, name)
    raise AssertionError("match set not found")


def test_photometric_augmentation():
    image = tf.constant(np.random.default_rng(0).uniform(0, 255, (40, 50, 1)), tf.float32)
    a = gl3d.photometric_augment(image, tf.constant([1, 2], tf.int64))
    b = gl3d.photometric_augment(image, tf.constant([1, 2], tf.int64))
    outs = [gl3d.photometric_augment(image, tf.constant([1, s], tf.int64)).numpy() for s in range(8)]
    np.testing.assert_array_equal(a, b)
    assert a.shape == image.shape and all(0 <= o.min() and o.max() <= 255 for o in outs)
    assert len({o.tobytes() for o in outs}) == 8 and not np.allclose(outs[0], image.numpy())
    # Known answer: on a constant image contrast and blur change nothing, brightness shifts by |delta| <= 50.
    flat = gl3d.photometric_augment(tf.fill([16, 16, 1], 100.0), tf.constant([4, 5], tf.int64)).numpy()
    assert np.ptp(flat) < 1e-3 and 50 <= flat[0, 0, 0] <= 150 and flat[0, 0, 0] != 100
    kernels = gl3d._motion_blur_kernels()
    np.testing.assert_allclose(kernels.sum(axis=(1, 2)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(kernels[1, 1], [np.exp(-1 / 1.125), 1, np.exp(-1 / 1.125)] /
                               (1 + 2 * np.exp(-1 / 1.125)), rtol=1e-6)  # horizontal, variance 9/16


def _photometric_reference(image, delta, factor, kernel_index, order):
    """TFMatch's photometric ops in numpy/OpenCV (the original's filter2D with its default reflect-101 border)."""
    x = image[..., 0]
    for op in order:
        if op == 0:
            x = np.clip(x + delta, 0.0, 255.0)
        elif op == 1:
            x = np.clip((x - x.mean()) * factor + x.mean(), 0.0, 255.0)
        else:
            x = cv2.filter2D(x, -1, gl3d._motion_blur_kernels()[kernel_index], borderType=cv2.BORDER_REFLECT_101)
    return np.clip(x, 0.0, 255.0)[..., None]


def test_photometric_ops_match_opencv_for_every_kernel_and_order():
    image = np.random.default_rng(1).uniform(0, 255, (23, 31, 1)).astype(np.float32)
    for kernel_index, order in itertools.product(range(5), itertools.permutations(range(3))):
        out = gl3d.apply_photometric(tf.constant(image), 30.0, 1.4, kernel_index, list(order)).numpy()
        np.testing.assert_allclose(out, _photometric_reference(image, 30.0, 1.4, kernel_index, order), atol=1e-3,
                                   err_msg=f"kernel {kernel_index}, order {order}")


def test_photometric_parameters_follow_tfmatch_distributions():
    params = [gl3d.photometric_parameters(tf.constant([7, s], tf.int64)) for s in range(600)]
    kernels = np.bincount([int(p["kernel_index"]) for p in params], minlength=5) / len(params)
    assert abs(kernels[0] - 0.5) < 0.07 and np.all(np.abs(kernels[1:] - 0.125) < 0.05), kernels
    assert {tuple(p["order"].numpy()) for p in params} == set(itertools.permutations(range(3)))
    delta, factor = np.array([[float(p["delta"]), float(p["factor"])] for p in params]).T
    assert -50 <= delta.min() < -40 and 40 < delta.max() <= 50
    assert 0.3 <= factor.min() < 0.4 and 1.4 < factor.max() <= 1.5
    again = gl3d.photometric_parameters(tf.constant([7, 0], tf.int64))
    assert all(np.array_equal(again[k], params[0][k]) for k in again)


def _python_ops(ds):
    graph = tf.compat.v1.GraphDef.FromString(ds._as_serialized_graph().numpy())
    ops = [n.op for n in graph.node] + [n.op for f in graph.library.function for n in f.node_def]
    return sorted({op for op in ops if op in ("PyFunc", "PyFuncStateless", "EagerPyFunc")})


def test_dense_pipeline_has_no_python_ops_and_any_thread_count_gives_the_same_batches(gl3d_root):
    """Python in a map holds the GIL and serialises the parallel calls: the dense pipeline must be TF ops only."""
    def make():
        return gl3d.gl3d_dense_dataset("train", 2, gl3d_root=gl3d_root, image_size=64, num_corr=16, seed=5)

    assert _python_ops(make()) == []
    assert _python_ops(gl3d.gl3d_pair_dataset("train", gl3d_root)) == []
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    one_thread, default = _first(make().with_options(options), 3), _first(make(), 3)
    for x, y in zip(one_thread, default):
        for key in DENSE_KEYS:
            np.testing.assert_array_equal(x[key], y[key])


def test_loaders_read_what_numpy_and_opencv_read(gl3d_root, tmp_path):
    sample = next(iter(gl3d.gl3d_pair_dataset("test", gl3d_root)))
    image_path, depth_path = sample["image_path0"].numpy().decode(), sample["depth_path0"].numpy().decode()
    image = gl3d.load_gray_image(tf.constant(image_path)).numpy()
    # The JPEG's luma plane, as TFMatch's decode_jpeg(channels=1); OpenCV converts the decoded colours instead.
    np.testing.assert_array_equal(image, tf.io.decode_jpeg(tf.io.read_file(image_path), channels=1).numpy())
    opencv = cv2.imread(image_path, cv2.IMREAD_GRAYSCALE)[..., None]
    assert image.dtype == np.uint8 and image.shape == opencv.shape
    assert np.abs(image.astype(int) - opencv).mean() < 2.0
    depth = gl3d_io.read_pfm(depth_path)
    np.testing.assert_array_equal(gl3d.load_depth(tf.constant(depth_path)).numpy(), depth)
    # Big-endian (positive scale) and 3-channel PF files: channel 0, rows flipped to top-down.
    h, w = depth.shape
    rgb = np.stack([depth, depth + 1, depth + 2], -1)
    big = tmp_path / "big.pfm"
    big.write_bytes(f"PF\n{w} {h}\n1.0\n".encode() + np.ascontiguousarray(rgb[::-1], ">f4").tobytes())
    np.testing.assert_array_equal(gl3d.load_depth(tf.constant(str(big))).numpy(), depth)
    bad = {"nan.pfm": (b"Pf\n2 1\n-1.0\n" + np.array([1.0, np.nan], "<f4").tobytes(), "depth contains NaN or Inf"),
           "short.pfm": (b"Pf\n2 1\n-1.0\n" + np.array([1.0], "<f4").tobytes(),
                         "truncated PFM, 2x1x1 needs 8 bytes of data, file has 4"),
           "size.pfm": (b"Pf\n2 x\n-1.0\n" + bytes(8), "malformed PFM size line"),
           "magic.pfm": (b"P6\n2 1\n255\n" + bytes(6), "not a PFM file")}
    for name, (payload, message) in bad.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"{tmp_path / name}: {message}"):
            gl3d.load_depth(tf.constant(str(tmp_path / name)))


def test_bad_input_errors_name_the_file(gl3d_root, gl3d_copy):
    root = gl3d_copy(gl3d_root)
    lists = gl3d_io.read_split_lists(root, "gl3d")
    test_scene = lists.scenes[-1]
    ds = lambda: gl3d.gl3d_dense_dataset("test", 1, gl3d_root=root, image_size=32, num_corr=8)  # noqa: E731
    first = next(iter(gl3d.gl3d_pair_dataset("test", root)))
    image_path, depth_path = first["image_path0"].numpy().decode(), first["depth_path0"].numpy().decode()

    with open(image_path, "rb") as f:
        jpeg = f.read()
    with open(image_path, "wb") as f:
        f.write(jpeg[: len(jpeg) // 2])
    with pytest.raises(tf.errors.OpError, match=f"{image_path}: corrupt or truncated JPEG"):
        _first(ds())
    with open(image_path, "wb") as f:
        f.write(jpeg)

    with open(depth_path, "rb") as f:
        pfm = f.read()
    with open(depth_path, "wb") as f:
        f.write(pfm[:-40])
    with pytest.raises(tf.errors.OpError, match=f"{depth_path}: truncated PFM"):
        _first(ds())
    with open(depth_path, "wb") as f:
        f.write(pfm)
    _first(ds())  # restored: reads again

    folder = os.path.join(root, "data", test_scene.pid, "match_sets")
    name = sorted(n for n in os.listdir(folder) if n.endswith(".match_set"))[0]
    with open(os.path.join(folder, name), "ab") as f:
        f.write(b"\0" * 4)
    with pytest.raises(gl3d_io.GL3DFormatError, match=f"{name}: expected {gl3d_io.match_set_bytes(GL3D_NUM_CORR)} "
                                                      f"bytes per record"):
        ds()
    os.remove(gl3d_io.split_marker_path(root, "gl3d"))
    with pytest.raises(gl3d_io.GL3DFormatError, match="run python -m data_tools.gl3d_match_sets"):
        ds()
    with pytest.raises(ValueError, match="gl3d_root is not set"):
        gl3d.gl3d_dense_dataset("train", 2)


def test_gin_file_binds_the_dense_dataset(repo_root):
    gin.clear_config()
    try:
        gin.parse_config_file(os.path.join(repo_root, "configs", "data", "gl3d_dense.gin"), skip_unknown=["train"])
        gin.parse_config("GL3D_ROOT = 'some/gl3d_dir'\nIMAGE_SIZE = 64")
        assert gin.query_parameter("gl3d_dense_dataset.num_corr") == 1024
        with pytest.raises(gl3d_io.GL3DFormatError, match=r"some/gl3d_dir/list/gl3d/\.match_sets\.complete"):
            gl3d.gl3d_dense_dataset("train", 2)
    finally:
        gin.clear_config()
