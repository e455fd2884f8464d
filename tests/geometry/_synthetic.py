"""A synthetic two-view scene shared by the camera and epipolar tests (numpy, float64)."""

import numpy as np


def rotation(axis, angle):
    axis = np.asarray(axis, "float64") / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def scene(n=20, seed=0):
    """Two world->camera poses per batch item (B = 2), intrinsics, world points seen by both cameras, and
    their pixels: dict of float32 arrays."""
    rng = np.random.default_rng(seed)
    K = np.array([[[100.0, 0, 32], [0, 110, 24], [0, 0, 1]], [[80.0, 0.5, 40], [0, 80, 30], [0, 0, 1]]])
    R0 = np.stack([rotation([0, 1, 0.2], 0.1), rotation([1, 0, 0], -0.05)])
    t0 = np.array([[0.1, -0.2, 0.3], [0.0, 0.1, -0.1]])
    R1 = np.stack([rotation([0.3, 1, 0], -0.2), rotation([0.1, 0.2, 1], 0.3)])
    t1 = np.array([[-0.5, 0.1, 0.2], [0.4, -0.3, 0.1]])
    # World points in front of both cameras: sample in camera 0, map to the world.
    cam0 = np.concatenate([rng.uniform(-1, 1, (2, n, 2)), rng.uniform(4, 8, (2, n, 1))], -1)
    world = np.einsum("bji,bnj->bni", R0, cam0 - t0[:, None])
    cam1 = np.einsum("bij,bnj->bni", R1, world) + t1[:, None]

    def pix(cam, k):
        uvw = np.einsum("bij,bnj->bni", k, cam)
        return uvw[..., :2] / uvw[..., 2:]

    out = dict(K0=K, K1=K[::-1].copy(), R0=R0, t0=t0, R1=R1, t1=t1, world=world, cam0=cam0, cam1=cam1)
    out["pix0"] = pix(cam0, out["K0"])
    out["pix1"] = pix(cam1, out["K1"])
    return {k: v.astype("float32") for k, v in out.items()}
