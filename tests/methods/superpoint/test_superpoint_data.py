"""Synthetic shapes, the homography sampler, the image-folder pairs and the label export tool."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tfmatch.data import homographies as hom
from tfmatch.data import synthetic_shapes as ss

CANVAS = (240, 320)
WITH_CORNERS = ("draw_lines", "draw_polygon", "draw_multiple_polygons", "draw_star", "draw_checkerboard",
                "draw_stripes", "draw_cube")


@pytest.mark.parametrize("primitive", WITH_CORNERS)
def test_corners_lie_on_the_drawn_shapes(primitive):
    """Every ground-truth corner is where the primitive changed the background (within 2 px), and lies on an
    edge of what was drawn (both changed and unchanged pixels, or two drawn grey levels, around it)."""
    on_shape = on_edge = total = 0
    for seed in range(6):
        rng = np.random.default_rng([7, seed])
        background = ss.generate_background(rng, CANVAS)
        image = background.copy()
        points = np.asarray(getattr(ss, primitive)(image, rng)).reshape(-1, 2)
        assert np.all(hom.points_inside(points, *CANVAS)), primitive
        changed = cv2.dilate((image != background).astype(np.uint8), np.ones((5, 5), np.uint8))
        for x, y in np.round(points).astype(int):
            total += 1
            on_shape += bool(changed[y, x])
            window = image[max(y - 3, 0):y + 4, max(x - 3, 0):x + 4].astype(int)
            on_edge += bool(window.max() - window.min() >= 10)
    assert total > 0
    assert on_shape / total >= 0.95, (primitive, on_shape, total)
    assert on_edge / total >= 0.9, (primitive, on_edge, total)


def test_shapes_without_corners_and_determinism():
    for primitive in ("draw_ellipses", "gaussian_noise"):
        image, points = ss.generate_shape(np.random.default_rng(0), primitive, (32, 40), CANVAS)
        assert points.shape == (0, 2) and image.shape == (32, 40)
    a = ss.SyntheticShapes("train", seed=3, image_size=(32, 40), canvas_size=CANVAS).sample(5)
    b = ss.SyntheticShapes("train", seed=3, image_size=(32, 40), canvas_size=CANVAS).sample(5)
    c = ss.SyntheticShapes("train", seed=4, image_size=(32, 40), canvas_size=CANVAS).sample(5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_resized_corners_stay_on_edges():
    """After blur and resize to the training size the corners still sit where the image has contrast."""
    hits = total = 0
    for seed in range(8):
        for primitive in ("draw_polygon", "draw_checkerboard", "draw_cube"):
            image, points = ss.generate_shape(np.random.default_rng([seed, 1]), primitive, (60, 80), CANVAS)
            assert np.all(hom.points_inside(points, 60, 80))
            for x, y in np.round(points).astype(int):
                window = image[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].astype(int)
                hits += bool(window.max() - window.min() >= 6)
                total += 1
    assert total > 50 and hits / total >= 0.9, (hits, total)


def test_homography_sampler_maps_corners_as_warp_image_does():
    rng = np.random.default_rng(0)
    h, w = 60, 80
    image = np.zeros((h, w), np.float32)
    image[20, 30] = 255.0
    for config in (hom.HomographyConfig(), hom.MAGICPOINT_AUGMENTATION, hom.ADAPTATION):
        for _ in range(5):
            H = hom.sample_homography(rng, h, w, config)
            assert H.shape == (3, 3) and np.isfinite(H).all()
            warped = hom.warp_image(image, H, h, w)
            p = hom.warp_points(H, [[30.0, 20.0]])[0]
            if warped.max() > 50:  # the point stayed in view: the brightest pixel is where warp_points says
                y, x = np.unravel_index(np.argmax(warped), warped.shape)
                assert abs(x - p[0]) <= 1.0 and abs(y - p[1]) <= 1.0
    # Without artifacts the centred patch of the warped image always shows the input (rpautrat semantics).
    config = hom.HomographyConfig(patch_ratio=0.8, allow_artifacts=False)
    for _ in range(10):
        H = hom.sample_homography(rng, h, w, config)
        assert hom.valid_mask(H, h, w, h, w)[7:53, 9:71].min() == 1.0
    zoom = hom.HomographyConfig(patch_ratio=0.8, allow_artifacts=False, perspective=False, rotation=False,
                                scaling=False, translation=False, zoom=True)
    np.testing.assert_allclose(np.abs(hom.sample_homography(rng, h, w, zoom)).diagonal(), [1.25, 1.25, 1], rtol=1e-5)


def test_synthetic_dataset_batches(tmp_path):
    ds = ss.synthetic_shapes_dataset("val", 4, image_size=(32, 40), canvas_size=CANVAS, max_examples=6)
    batches = list(ds)
    assert [b["image"].shape[0] for b in batches] == [4, 2]
    batch = batches[0]
    assert tuple(batch["image"].shape) == (4, 32, 40, 1) and tuple(batch["keypoint_map"].shape) == (4, 32, 40)
    assert float(np.min(batch["valid_mask"])) == 1.0  # no augmentation outside training
    def first_batch():
        return next(iter(ss.synthetic_shapes_dataset("train", 4, image_size=(32, 40), canvas_size=CANVAS)))

    train, again = first_batch(), first_batch()
    np.testing.assert_array_equal(np.asarray(train["image"]), np.asarray(again["image"]))  # deterministic
    assert set(np.unique(np.asarray(train["keypoint_map"]))) <= {0.0, 1.0}
    plain = ss.SyntheticShapes("train", image_size=(32, 40), canvas_size=CANVAS, augment=False).drawn(0)[0]
    assert np.abs(np.asarray(train["image"])[0, :, :, 0] - plain).mean() > 1.0  # training batches are augmented


def test_worker_processes_make_the_same_batches():
    """processes=2 (samples made in spawned worker processes) gives exactly the in-process batches."""
    kwargs = dict(image_size=(32, 40), canvas_size=CANVAS)
    for split, extra in (("train", {}), ("val", {"max_examples": 5})):
        plain = list(ss.synthetic_shapes_dataset(split, 4, **kwargs, **extra).take(2))
        pooled = list(ss.synthetic_shapes_dataset(split, 4, processes=2, **kwargs, **extra).take(2))
        assert len(plain) == len(pooled) == 2
        for a, b in zip(plain, pooled):
            for key in ("image", "keypoint_map", "valid_mask"):
                np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
    with pytest.raises(ValueError, match="processes"):
        ss.synthetic_shapes_dataset("train", 4, processes=-1, **kwargs)


def test_fixed_set_written_resumed_and_read(tmp_path, subprocess_env, repo_root):
    out = str(tmp_path / "shapes")
    cmd = [sys.executable, "-m", "data_tools.synthetic_shapes", "--out", out, "--train", "2", "--val", "1",
           "--test", "1", "--height", "32", "--width", "40", "--canvas_height", "120", "--canvas_width", "160",
           "--primitives", "draw_star,draw_cube"]
    subprocess.run(cmd, check=True, cwd=repo_root, env=subprocess_env, capture_output=True, timeout=120)
    files = sorted(os.listdir(os.path.join(out, "draw_star", "train")))
    assert files == ["000000.npy", "000000.png", "000001.npy", "000001.png"]
    assert os.path.isfile(os.path.join(out, ".complete"))
    from data_tools.synthetic_shapes import write_set

    first = cv2.imread(os.path.join(out, "draw_cube", "train", "000001.png"), cv2.IMREAD_GRAYSCALE)
    os.remove(os.path.join(out, "draw_cube", "train", "000001.png"))
    os.remove(os.path.join(out, ".complete"))
    assert write_set(out, {"train": 2, "val": 1, "test": 1}, (32, 40), (120, 160),
                     primitives=("draw_star", "draw_cube"), progress=False) == 1  # only the missing one
    np.testing.assert_array_equal(cv2.imread(os.path.join(out, "draw_cube", "train", "000001.png"), 0), first)
    source = ss.SyntheticShapes("train", image_size=(32, 40), data_dir=out, primitives=("draw_star", "draw_cube"),
                                augment=False)
    assert len(source) == 4
    image, kmap, mask = source.sample(0)
    assert image.shape == (32, 40) and kmap.sum() >= 1 and mask.min() == 1
    # Training reads every pass in its own shuffled order (sorted order gives batches of one primitive); other splits
    # in sorted order; the same index always reads the same file, also in a fresh instance (worker processes).
    passes = [[source._file(e * 4 + i) for i in range(4)] for e in range(6)]
    assert all(sorted(p) == source.files for p in passes)
    assert any(p != source.files for p in passes) and len({tuple(p) for p in passes}) > 1
    again = ss.SyntheticShapes("train", image_size=(32, 40), data_dir=out, primitives=("draw_star", "draw_cube"))
    assert [again._file(i) for i in range(24)] == [f for p in passes for f in p]
    val = ss.SyntheticShapes("val", image_size=(32, 40), data_dir=out, primitives=("draw_star", "draw_cube"))
    assert [val._file(i) for i in range(len(val))] == val.files
    with pytest.raises(FileNotFoundError, match="complete"):
        ss.SyntheticShapes("train", data_dir=str(tmp_path))
    # Two worker processes write the same files.
    pooled = str(tmp_path / "pooled")
    assert write_set(pooled, {"train": 2, "val": 1, "test": 1}, (32, 40), (120, 160),
                     primitives=("draw_star", "draw_cube"), progress=False, workers=2) == 8
    for primitive in ("draw_star", "draw_cube"):
        for split in ("train", "val", "test"):
            folder = os.path.join(primitive, split)
            assert sorted(os.listdir(os.path.join(pooled, folder))) == sorted(os.listdir(os.path.join(out, folder)))
            for name in os.listdir(os.path.join(out, folder)):
                a, b = os.path.join(out, folder, name), os.path.join(pooled, folder, name)
                if name.endswith(".png"):
                    np.testing.assert_array_equal(cv2.imread(a, 0), cv2.imread(b, 0))
                else:
                    np.testing.assert_array_equal(np.load(a), np.load(b))


def _image_folder(tmp_path, count=4, size=(48, 64)):
    folder = tmp_path / "images" / "sub"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        image = np.zeros(size, np.uint8)
        for _ in range(3):
            x, y = rng.integers(5, size[1] - 20), rng.integers(5, size[0] - 20)
            cv2.rectangle(image, (int(x), int(y)), (int(x) + 12, int(y) + 10), int(rng.integers(100, 255)), -1)
        cv2.imwrite(str(folder / f"im{i}.png"), image)
    (folder / "broken.jpg").write_bytes(b"not an image")
    return str(tmp_path / "images")


def test_export_labels_resumes_and_feeds_superpoint_pairs(tmp_path):
    from data_tools import superpoint_export_labels as export
    from tfmatch.data.image_folder import image_folder_dataset
    from tfmatch.methods.superpoint import MagicPoint

    images = _image_folder(tmp_path)
    model = MagicPoint(encoder_channels=(4, 4, 8, 8), head_channels=8, max_keypoints=20, detection_threshold=0.0)
    labels = str(tmp_path / "labels")
    stats = export.export_labels(model, images, labels, num_homographies=3, height=32, width=48, batch_size=2,
                                 progress=False)
    assert stats["written"] == 4 and stats["unreadable"] == ["sub/broken.jpg"]
    assert os.path.isfile(os.path.join(labels, ".complete"))
    with np.load(os.path.join(labels, "sub", "im0.npz")) as data:
        assert data["pts"].shape[1] == 2 and len(data["pts"]) == len(data["scores"]) > 0
        np.testing.assert_array_equal(data["image_size"], [32, 48])
        first = data["pts"].copy()
    os.remove(os.path.join(labels, "sub", "im0.npz"))
    stats = export.export_labels(model, images, labels, num_homographies=3, height=32, width=48, progress=False)
    assert stats["written"] == 1 and stats["skipped_existing"] == 3  # resumed
    with np.load(os.path.join(labels, "sub", "im0.npz")) as data:
        np.testing.assert_array_equal(data["pts"], first)  # same homographies on a rerun

    ds = image_folder_dataset("train", 2, image_dir=images, label_dir=labels, image_size=(32, 48),
                              validation_fraction=0.0)
    batch = next(iter(ds))
    assert tuple(batch["image0"].shape) == (2, 32, 48, 1) and tuple(batch["homography"].shape) == (2, 3, 3)
    # The labels of image 1 are those of image 0 moved by the homography.
    k0 = np.argwhere(np.asarray(batch["keypoint_map0"][0]) > 0)[:, ::-1].astype(np.float64)
    k1 = np.argwhere(np.asarray(batch["keypoint_map1"][0]) > 0)[:, ::-1].astype(np.float64)
    moved = hom.warp_points(np.asarray(batch["homography"][0]), k0)
    moved = moved[hom.points_inside(moved, 32, 48)]
    assert len(k1) == len(np.unique(np.round(moved), axis=0))
    single = next(iter(image_folder_dataset("train", 2, image_dir=images, label_dir=labels, image_size=(32, 48),
                                            validation_fraction=0.0, pairs=False)))
    assert set(single) == {"image", "keypoint_map", "valid_mask"}
    pooled = next(iter(image_folder_dataset("train", 2, image_dir=images, label_dir=labels, image_size=(32, 48),
                                            validation_fraction=0.0, processes=2)))
    for key in batch:  # worker processes make the same pairs
        np.testing.assert_array_equal(np.asarray(pooled[key]), np.asarray(batch[key]))


def test_photo_folder_is_deterministic_complete_and_readable_by_the_pipeline(tmp_path):
    import cv2

    from data_tools.make_photo_folder import write_folder
    from data_tools.superpoint_export_labels import list_images

    out = tmp_path / "photos"
    assert write_folder(str(out), count=5, height=48, width=64, seed=3) == 5
    names = list_images(str(out))
    assert len(names) == 5 and (out / ".complete").is_file()
    first = cv2.imread(str(out / names[0]))
    assert first.shape == (48, 64, 3) and first.std() > 5  # a photograph, not a blank
    assert write_folder(str(out), count=5, height=48, width=64, seed=3) == 0  # complete: left alone
    again = tmp_path / "again"
    write_folder(str(again), count=5, height=48, width=64, seed=3)
    np.testing.assert_array_equal(cv2.imread(str(again / names[0])), first)
