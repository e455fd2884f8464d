"""Exact-ground-truth pairs for ASLFeat tests: a fronto-parallel textured plane seen by two pinhole cameras.

Camera 0 looks at the plane Z = ``depth``; camera 1 is x1 = R x0 + t with a small random rotation and translation,
so image 0 pixel p maps to image 1 pixel ``H p`` with H = K (R + t n^T / depth) K^-1, n = (0, 0, 1). Textures are
crops of scikit-image's bundled photographs (no download). Batches follow docs/developing.md (GL3D dense pairs).
"""

import cv2
import numpy as np
import skimage.data

TRAIN_PHOTOS = ("camera", "astronaut", "coffee", "rocket")
TEST_PHOTOS = ("chelsea", "coins")


def _gray(name):
    image = getattr(skimage.data, name)()
    if image.ndim == 3:
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2GRAY)
    return image.astype(np.float32)


def _rotation(rng, max_tilt_deg, max_roll_deg):
    tilt = np.deg2rad(rng.uniform(-max_tilt_deg, max_tilt_deg, size=2))
    roll = np.deg2rad(rng.uniform(-max_roll_deg, max_roll_deg))
    rx, _ = cv2.Rodrigues(np.array([tilt[0], 0, 0], np.float64))
    ry, _ = cv2.Rodrigues(np.array([0, tilt[1], 0], np.float64))
    rz, _ = cv2.Rodrigues(np.array([0, 0, roll], np.float64))
    return rz @ ry @ rx


def make_pair(rng, photos, size=64, depth=4.0, focal=64.0):
    """One pair: dict of numpy arrays (no batch axis) plus ``H`` (image 0 -> image 1 pixels)."""
    photo = _gray(photos[rng.integers(len(photos))])
    margin = size  # the plane extends beyond image 0 so that image 1 is fully textured
    scale = rng.uniform(0.5, 1.0)
    crop = int((size + 2 * margin) / scale)
    y0 = rng.integers(0, photo.shape[0] - crop + 1) if photo.shape[0] > crop else 0
    x0 = rng.integers(0, photo.shape[1] - crop + 1) if photo.shape[1] > crop else 0
    texture = cv2.resize(photo[y0:y0 + crop, x0:x0 + crop], (size + 2 * margin, size + 2 * margin),
                         interpolation=cv2.INTER_AREA)
    c = (size - 1) / 2.0
    K = np.array([[focal, 0, c], [0, focal, c], [0, 0, 1]], np.float64)
    R = _rotation(rng, 8.0, 20.0)
    t = rng.uniform(-0.3, 0.3, size=3) * np.array([1, 1, 0.5])
    n = np.array([0.0, 0.0, 1.0])
    H = K @ (R + np.outer(t, n) / depth) @ np.linalg.inv(K)
    H /= H[2, 2]
    shift = np.array([[1, 0, -margin], [0, 1, -margin], [0, 0, 1]], np.float64)
    image0 = cv2.warpPerspective(texture, shift, (size, size), flags=cv2.INTER_LINEAR)
    image1 = cv2.warpPerspective(texture, H @ shift, (size, size), flags=cv2.INTER_LINEAR)
    # depth1(q): z in camera 1 of the plane point seen at image-1 pixel q.
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    q = np.stack([xs.ravel(), ys.ravel(), np.ones(size * size)])
    p = np.linalg.inv(H) @ q
    p /= p[2]
    x0_3d = depth * (np.linalg.inv(K) @ p)
    depth1 = (R @ x0_3d + t[:, None])[2].reshape(size, size)
    return {
        "image0": image0[..., None].astype(np.float32),
        "image1": image1[..., None].astype(np.float32),
        "depth0": np.full((size, size), depth, np.float32),
        "depth1": depth1.astype(np.float32),
        "K0": K.astype(np.float32),
        "K1": K.astype(np.float32),
        "R_0to1": R.astype(np.float32),
        "t_0to1": t.astype(np.float32),
        "H": H.astype(np.float32),
    }


def make_batch(rng, photos, batch_size=2, **kwargs):
    pairs = [make_pair(rng, photos, **kwargs) for _ in range(batch_size)]
    return {key: np.stack([p[key] for p in pairs]) for key in pairs[0]}


def warp(H, points):
    """points [N, 2] (x, y) -> [N, 2] through the 3x3 homography H."""
    ph = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ H.T
    return ph[:, :2] / ph[:, 2:3]


def mutual_nn_mma(out0, out1, H, threshold=3.0):
    """Mean matching accuracy of mutual nearest-neighbour descriptor matches (one pair of extract outputs)."""
    k0 = out0["keypoints"][out0["valid"]]
    k1 = out1["keypoints"][out1["valid"]]
    d0 = out0["descriptors"][out0["valid"]]
    d1 = out1["descriptors"][out1["valid"]]
    if len(k0) == 0 or len(k1) == 0:
        return 0.0, 0
    sim = d0 @ d1.T
    nn01 = sim.argmax(1)
    nn10 = sim.argmax(0)
    mutual = nn10[nn01] == np.arange(len(k0))
    if not mutual.any():
        return 0.0, 0
    err = np.linalg.norm(warp(H, k0[mutual]) - k1[nn01[mutual]], axis=1)
    return float(np.mean(err <= threshold)), int(mutual.sum())
