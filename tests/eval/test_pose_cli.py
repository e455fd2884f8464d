"""``python -m tfmatch.evaluate pose`` on rendered images: a synthetic two-view scene of textured planes with known
intrinsics and relative pose, written as PNGs with a SuperGlue ``pairs_with_gt`` file, scored with SIFT."""

import json
import math

import cv2
import h5py
import numpy as np
import pytest

from tests.runtime._cli import run_cli

WIDTH, HEIGHT = 800, 600  # rendered size; the protocol resizes to 640 x 480 (keypoints stay in these pixels)
K = np.array([[600.0, 0.0, (WIDTH - 1) / 2], [0.0, 600.0, (HEIGHT - 1) / 2], [0.0, 0.0, 1.0]])


def _rotation(axis, degrees):
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    return cv2.Rodrigues(axis * math.radians(degrees))[0]


def _texture(name):
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
    return image.astype(np.float32)


def _scene():
    """Planes ``(centre [3], rotation [3,3] (columns: in-plane axes u, v and the normal), half sizes, texture)``
    in the world = camera-0 frame (x right, y down, z forward): a back wall and two tilted boards in front."""
    return [
        (np.array([0.0, 0.0, 9.0]), np.eye(3), (7.0, 5.5), _texture("astronaut")),
        (np.array([-1.3, 0.4, 5.0]), _rotation([0, 1, 0], 35), (1.4, 1.1), _texture("coffee")),
        (np.array([1.4, -0.6, 6.0]), _rotation([1, 0.5, 0], -30), (1.3, 1.3), _texture("chelsea")),
    ]


def _render(planes, R, t):
    """Ray-casts the planes into the camera ``x_cam = R x_world + t``: the nearest plane hit by each pixel's ray,
    its texture sampled bilinearly; 127 (no texture, no keypoints) elsewhere. Returns uint8 ``[HEIGHT, WIDTH]``."""
    xs, ys = np.meshgrid(np.arange(WIDTH, dtype=np.float64), np.arange(HEIGHT, dtype=np.float64))
    rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(K).T @ R  # world directions (R^T d)
    centre = -R.T @ t
    image = np.full((HEIGHT, WIDTH), 127.0, np.float32)
    depth = np.full((HEIGHT, WIDTH), np.inf)
    for origin, axes, (half_u, half_v), texture in planes:
        normal = axes[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = ((origin - centre) @ normal) / (rays @ normal)  # = depth in the camera (rays have z = 1)
        offset = centre + lam[..., None] * rays - origin
        u, v = offset @ axes[:, 0], offset @ axes[:, 1]
        hit = (lam > 0) & (np.abs(u) <= half_u) & (np.abs(v) <= half_v) & (lam < depth)
        th, tw = texture.shape
        map_x = ((u + half_u) / (2 * half_u) * (tw - 1)).astype(np.float32)
        map_y = ((v + half_v) / (2 * half_v) * (th - 1)).astype(np.float32)
        sampled = cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        image[hit], depth[hit] = sampled[hit], lam[hit]
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _pair_line(name0, name1, rot0, rot1, T):
    fields = [name0, name1, str(rot0), str(rot1)] + [f"{v:.12g}" for v in np.concatenate([K.ravel(), K.ravel(),
                                                                                          T.ravel()])]
    return " ".join(fields)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("pose")
    images = root / "images"
    images.mkdir()
    planes = _scene()
    # Camera 1: 1.5 m to the right, 0.3 m up, 0.8 m forward, turned 10 degrees back towards the scene.
    R = _rotation([0, 1, 0], 10.0) @ _rotation([1, 0, 0], 2.0)
    t = -R @ np.array([1.5, -0.3, 0.8])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    cv2.imwrite(str(images / "view0.png"), _render(planes, np.eye(3), np.zeros(3)))
    cv2.imwrite(str(images / "view1.png"), _render(planes, R, t))
    cv2.imwrite(str(images / "blank.png"), np.full((HEIGHT, WIDTH), 127, np.uint8))  # nothing to detect
    pairs = root / "pairs_with_gt.txt"
    pairs.write_text("\n".join([
        "# name0 name1 rot0 rot1 K0 K1 T_0to1",
        _pair_line("view0.png", "view1.png", 0, 0, T),  # the easy pair
        _pair_line("view0.png", "view1.png", 0, 1, T),  # view 1 extracted after a quarter turn (EXIF-style)
        _pair_line("view0.png", "blank.png", 0, 0, T),  # no matches: a failure
    ]) + "\n")
    return root, pairs, images


def test_evaluate_pose_cli_on_rendered_views(scene, tmp_path, subprocess_env, repo_root):
    root, pairs, images = scene
    out = tmp_path / "eval"
    run_cli("tfmatch.evaluate", ["pose", "--pairs", str(pairs), "--images", str(images), "--method", "sift",
                                 "--out", str(out), "--num_match_images", "1", "--noprogress"],
            subprocess_env, repo_root)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"auc", "num_pairs", "failures"}
    assert list(summary["auc"]) == ["5", "10", "20"]
    assert summary["num_pairs"] == 3 and summary["failures"] == 1
    records = json.loads((out / "sift" / "pairs.json").read_text())
    assert [r["failed"] for r in records] == [False, False, True]
    for record in records[:2]:  # the easy pair, upright and with view 1 turned: a small pose error
        assert record["num_inliers"] > 200, record
        assert record["error_R"] < 1.0 and record["error_t"] < 2.0, record
    # The turn is applied after the 640 x 480 resize (SuperGlue's order), so the turned view is not squashed
    # into a landscape frame: as many inliers as upright (about half as many when it was).
    assert records[1]["num_inliers"] > 0.8 * records[0]["num_inliers"]
    assert records[2]["error_R"] is None  # inf is written as null
    # Errors e1 <= e2 well under 5 degrees and one failure: the recall curve (0, 0), (e1, 1/3), (e2, 2/3), then
    # flat at 2/3, so AUC(T) = 2/3 - (2 e1 + e2) / (6 T).
    e1, e2 = sorted(max(r["error_R"], r["error_t"]) for r in records[:2])
    for threshold, auc in summary["auc"].items():
        assert auc == pytest.approx(2 / 3 - (2 * e1 + e2) / (6 * float(threshold)), abs=1e-9)
    assert len(list((out / "sift" / "matches").glob("*.png"))) == 1
    protocol = json.loads((out / "protocol.json").read_text())
    assert protocol["resize"] == [640, 480] and protocol["max_keypoints"] == 1024
    with h5py.File(out / "sift" / "features.h5", "r") as h5:
        assert list(h5["view0.png/image_size"][()]) == [WIDTH, HEIGHT]  # keypoints in the original pixels
        assert h5["view0.png/keypoints"][()].max(axis=0)[0] > 640
        assert "view1.png.rot1" in h5


def test_rendered_views_obey_the_ground_truth(scene):
    """The renderer itself: a point of a plane seen in view 0 projects to the same texture in view 1."""
    root, pairs, images = scene
    from tfmatch.eval import io

    pair = io.read_pairs(pairs)[0]
    view0 = io.read_image(images / pair.name0, channels=1)[..., 0].astype(np.float64)
    view1 = io.read_image(images / pair.name1, channels=1)[..., 0].astype(np.float64)
    origin, axes, _, _ = _scene()[1]  # the coffee board
    rng = np.random.default_rng(0)
    offsets = rng.uniform(-1.0, 1.0, (200, 2))
    world = origin + offsets @ axes[:, :2].T
    R, t = pair.T_0to1[:3, :3], pair.T_0to1[:3, 3]
    p0 = world @ K.T
    p1 = (world @ R.T + t) @ K.T
    p0, p1 = p0[:, :2] / p0[:, 2:], p1[:, :2] / p1[:, 2:]
    a = view0[np.round(p0[:, 1]).astype(int), np.round(p0[:, 0]).astype(int)]
    b = view1[np.round(p1[:, 1]).astype(int), np.round(p1[:, 0]).astype(int)]
    assert np.corrcoef(a, b)[0, 1] > 0.9


@pytest.mark.parametrize("rot", [0, 1, 2, 3])
def test_extractor_turns_after_resizing_and_maps_keypoints_back(rot):
    """``rot`` quarter turns come after the exact resize (W, H) = (40, 30), as SuperGlue's ``read_image``: the
    detector sees a 40 x 30 image turned, never a turned image squashed to 40 x 30."""
    from tfmatch.eval.extractors import Extractor

    seen = []

    def brightest_pixel(image):  # a "detector" with one keypoint at the maximum
        seen.append(image.shape[:2])
        y, x = np.unravel_index(np.argmax(image[..., 0]), image.shape[:2])
        return np.array([[x, y]], np.float32), np.ones(1, np.float32), np.ones((1, 1), np.float32)

    image = np.zeros((60, 80, 1), np.uint8)
    image[20:22, 50:52] = 255  # a 2 x 2 dot centred on (50.5, 20.5): one pixel, (25, 10), after halving
    keypoints, _, _ = Extractor("dot", {}, 1, brightest_pixel, resize=(40, 30))(image, rot)
    assert seen == [(30, 40) if rot % 2 == 0 else (40, 30)]
    np.testing.assert_allclose(keypoints, [[50.5, 20.5]])  # (25 + 0.5) * 2 - 0.5
