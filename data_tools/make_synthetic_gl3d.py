r"""Writes a small synthetic data set in the exact GL3D layout, so the GL3D pipeline runs with no download.

    python -m data_tools.make_synthetic_gl3d --out DIR [--scenes 4] [--images_per_scene 6] [--seed 0]
        [--image_size 1000] [--max_keypoints 4000] [--workers N] [--regenerate]

Each scene is a few textured planes and a box at different depths in front of a large back wall, textured with
the photographs scikit-image ships (no network). Cameras have known intrinsics (an "original" camera of
1200x900, 1000x1000 or 960x1280 pixels, images stored at image_size x image_size as GL3D does, aspect not kept)
and known world-to-camera poses looking at the scene from a few metres apart. Per image it writes the JPEG, the
depth map at image_size/4 (250x250 by default) as PFM, SIFT keypoints (OpenCV) as GL3D's normalised affines;
per scene ``geolabel/cameras.txt`` and ``geolabel/corr.bin`` (mutual nearest keypoints within 1 px after a
depth-consistent reprojection); ``list/gl3d/`` holds all four list files and the imageset lists (the last scene
is the test scene). Generation is deterministic for a given seed. ``<out>/.synthetic_gl3d.complete`` is written
last; a rerun with the same arguments is a no-op, ``--regenerate`` rebuilds.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import sys
import time

import cv2
import numpy as np

from data_tools.gl3d_match_sets import load_gl3d_io, pool_start_method

io = load_gl3d_io()
log = logging.getLogger("make_synthetic_gl3d")

MARKER = ".synthetic_gl3d.complete"
SPLIT = "gl3d"
PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "moon",
          "immunohistochemistry", "hubble_deep_field", "cell", "retina", "coins", "clock", "text", "page")
ORIGINAL_SIZES = ((1200, 900), (1000, 1000), (960, 1280))
MATCH_RADIUS_PX = 1.0  # keypoints closer than this (image pixels) after reprojection correspond
DEPTH_CONSISTENCY = 0.01  # relative depth agreement for visibility and for "not on a depth edge"
SUPPORT_PER_SIGMA = 10.6  # half-width of a keypoint's support region in SIFT sigmas (GeoDesc inference crop)


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3].astype(np.uint8))


def _texture(rng) -> np.ndarray:
    photo = _photo(PHOTOS[rng.integers(len(PHOTOS))])
    h, w = photo.shape[:2]
    ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    return photo[y:y + ch, x:x + cw]


def _rotation(axis, angle) -> np.ndarray:
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    return cv2.Rodrigues(axis * angle)[0]


def _make_scene(rng) -> list:
    """Quads ``(corners [4, 3] world, texture)``: a back wall, three tilted planes and a box."""
    quads = []
    z_wall = rng.uniform(11.0, 13.0)
    quads.append((np.array([[-10, -8, z_wall], [10, -8, z_wall], [10, 8, z_wall], [-10, 8, z_wall]], float),
                  _texture(rng)))
    for _ in range(3):
        centre = np.array([rng.uniform(-2.5, 2.5), rng.uniform(-1.5, 1.5), rng.uniform(5.0, 9.0)])
        half = np.array([rng.uniform(1.0, 2.0), rng.uniform(0.8, 1.6)])
        R = _rotation([rng.uniform(-1, 1), rng.uniform(-1, 1), 0.2], rng.uniform(-0.6, 0.6))
        local = np.array([[-half[0], -half[1], 0], [half[0], -half[1], 0], [half[0], half[1], 0],
                          [-half[0], half[1], 0]])
        quads.append((local @ R.T + centre, _texture(rng)))
    # A box: six faces, each a quad with its own texture.
    centre = np.array([rng.uniform(-1.5, 1.5), rng.uniform(-0.5, 1.0), rng.uniform(6.0, 8.0)])
    s = rng.uniform(0.7, 1.1)
    R = _rotation([0, 1, 0], rng.uniform(0, math.pi / 2)) @ _rotation([1, 0, 0], rng.uniform(-0.3, 0.3))
    cube = np.array([[x, y, z] for x in (-s, s) for y in (-s, s) for z in (-s, s)]) @ R.T + centre
    for face in ((0, 4, 6, 2), (1, 3, 7, 5), (0, 1, 5, 4), (2, 6, 7, 3), (0, 2, 3, 1), (4, 5, 7, 6)):
        quads.append((cube[list(face)], _texture(rng)))
    return quads


def _look_at(centre, target, roll) -> np.ndarray:
    """World -> camera rotation (rows: camera x right, y down, z forward); world y points down too."""
    z = target - centre
    z /= np.linalg.norm(z)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return _rotation([0, 0, 1], roll) @ R


def _render(quads, R, t, K, size):
    """Z-buffer rendering of textured quads. Returns (RGB uint8 [S, S, 3], depth [S, S] float64, 0 = none)."""
    image = np.full((size, size, 3), 127, np.uint8)
    zbuf = np.full((size, size), np.inf)
    xs, ys = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64))
    rays = np.stack([xs, ys, np.ones_like(xs)], axis=-1) @ np.linalg.inv(K).T  # z component = 1
    for corners, texture in quads:
        cam = corners @ R.T + t
        if np.any(cam[:, 2] <= 0.1):
            continue  # never happens with the layouts above; a homography would be wrong behind the camera
        pix = cam @ K.T
        pix = (pix[:, :2] / pix[:, 2:]).astype(np.float32)
        h, w = texture.shape[:2]
        src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
        H = cv2.getPerspectiveTransform(src, pix)
        warped = cv2.warpPerspective(texture, H, (size, size), flags=cv2.INTER_LINEAR)
        mask = cv2.warpPerspective(np.ones((h, w), np.uint8), H, (size, size), flags=cv2.INTER_NEAREST) > 0
        # Depth of the plane along each pixel's ray, computed in the quad's bounding box only.
        x0, y0 = np.clip(np.floor(pix.min(axis=0)).astype(int), 0, size)
        x1, y1 = np.clip(np.ceil(pix.max(axis=0)).astype(int) + 1, 0, size)
        if x1 <= x0 or y1 <= y0:
            continue
        box = (slice(y0, y1), slice(x0, x1))
        normal = np.cross(cam[1] - cam[0], cam[3] - cam[0])
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (normal @ cam[0]) / (rays[box] @ normal)
        update = mask[box] & (z > 0) & (z < zbuf[box])
        image[box][update] = warped[box][update]
        zbuf[box][update] = z[update]
    zbuf[~np.isfinite(zbuf)] = 0.0
    return image, zbuf


def _bilinear(depth, pts):
    """Bilinear depth at ``pts [N, 2]`` (x, y) and whether the 4 neighbours are inside, > 0 and agree."""
    h, w = depth.shape
    x, y = pts[:, 0], pts[:, 1]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    inside = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < w) & (y0 + 1 < h)
    x0c, y0c = np.clip(x0, 0, w - 2), np.clip(y0, 0, h - 2)
    n = np.stack([depth[y0c, x0c], depth[y0c, x0c + 1], depth[y0c + 1, x0c], depth[y0c + 1, x0c + 1]], axis=1)
    fx, fy = x - x0c, y - y0c
    value = (n[:, 0] * (1 - fx) * (1 - fy) + n[:, 1] * fx * (1 - fy) + n[:, 2] * (1 - fx) * fy
             + n[:, 3] * fx * fy)
    with np.errstate(divide="ignore", invalid="ignore"):
        smooth = (n.min(axis=1) > 0) & (n.max(axis=1) / n.min(axis=1) < 1 + DEPTH_CONSISTENCY)
    return value, inside & smooth


def _keypoints(gray, max_keypoints):
    sift = cv2.SIFT_create(nfeatures=max_keypoints)
    kps = sift.detect(gray, None)
    size = gray.shape[0]
    pts = np.array([kp.pt for kp in kps], np.float64).reshape(-1, 2)
    # Normalised affine: centre 2p/S - 1; 2x2 = (2/S) * radius * rotation, radius = 10.6 sigma, sigma = size/2.
    radius = np.array([kp.size for kp in kps]) * 0.5 * SUPPORT_PER_SIGMA
    phi = np.radians(360.0 - np.array([kp.angle for kp in kps]))
    a = 2.0 / size * radius
    kpts = np.stack([a * np.cos(phi), -a * np.sin(phi), 2 * pts[:, 0] / size - 1,
                     a * np.sin(phi), a * np.cos(phi), 2 * pts[:, 1] / size - 1], axis=1).astype(np.float32)
    return kpts, pts


def _correspondences(view0, view1, K):
    """Mutual nearest keypoints within 1 px after depth-consistent reprojection, both directions."""
    from scipy.spatial import cKDTree

    def project(src, dst):
        # Reproject with the stored (quarter-resolution) depth, as users of the data set will; the full-resolution
        # depth must agree, which keeps keypoints on depth edges out.
        z, ok = _bilinear(src["depth"], src["pts"] / 4.0)
        z_full, ok_full = _bilinear(src["depth_full"], src["pts"])
        ok &= ok_full & (np.abs(z_full - z) < DEPTH_CONSISTENCY * z_full)
        cam = (np.c_[src["pts"], np.ones(len(z))] @ np.linalg.inv(K).T) * z[:, None]
        R, t = io.relative_pose(src["R"], src["t"], dst["R"], dst["t"])
        cam1 = cam @ R.T + t
        with np.errstate(divide="ignore", invalid="ignore"):
            p = (cam1 @ K.T)[:, :2] / cam1[:, 2:]
            z1, ok1 = _bilinear(dst["depth_full"], p)
            ok &= ok1 & (cam1[:, 2] > 0) & (np.abs(z1 - cam1[:, 2]) < DEPTH_CONSISTENCY * cam1[:, 2])
        p[~ok] = -1e6
        dist, idx = cKDTree(dst["pts"]).query(p, distance_upper_bound=MATCH_RADIUS_PX)
        return np.where(ok & np.isfinite(dist), idx, -1), dist

    fwd, dist = project(view0, view1)
    bwd, _ = project(view1, view0)
    i0 = np.nonzero(fwd >= 0)[0]
    i0 = i0[bwd[fwd[i0]] == i0]
    i1 = fwd[i0]
    corr = np.concatenate([view0["kpts"][i0], view1["kpts"][i1],
                           (1.0 - dist[i0] / MATCH_RADIUS_PX)[:, None],  # a similarity in [0, 1]
                           i0[:, None], i1[:, None]], axis=1).astype(np.float32)
    return corr


def _scene_id(seed: int, index: int) -> str:
    return f"{(seed << 40) + (0x5e << 32) + index:024x}"  # 24 hex digits, like GL3D's scene ids


def generate_scene(out: str, seed: int, index: int, num_images: int, image_size: int, max_keypoints: int) -> str:
    rng = np.random.default_rng([seed, index])
    pid = _scene_id(seed, index)
    scene_dir = os.path.join(out, "data", pid)
    if os.path.isdir(scene_dir):
        shutil.rmtree(scene_dir)
    for sub in ("undist_images", "depths", "img_kpts", "geolabel"):
        os.makedirs(os.path.join(scene_dir, sub))
    width, height = ORIGINAL_SIZES[rng.integers(len(ORIGINAL_SIZES))]
    f = rng.uniform(0.9, 1.2) * max(width, height)
    K_orig = np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])
    K = np.diag([image_size / width, image_size / height, 1.0]) @ K_orig  # the stored image's camera
    quads = _make_scene(rng)
    cameras, views = {}, []
    for i in range(num_images):
        centre = np.array([rng.uniform(-2.5, 2.5), rng.uniform(-1.2, 1.2), rng.uniform(-1.0, 0.5)])
        target = np.array([rng.uniform(-1.0, 1.0), rng.uniform(-0.8, 0.8), 8.0])
        R = _look_at(centre, target, rng.uniform(-0.15, 0.15))
        t = -R @ centre
        image, depth_full = _render(quads, R, t, K, image_size)
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        kpts, pts = _keypoints(gray, max_keypoints)
        depth = depth_full[::4, ::4].astype(np.float32)  # depth pixel j <-> image pixel 4j
        name = f"{i:08d}"
        ok, jpeg = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        io.write_atomic(os.path.join(scene_dir, "undist_images", name + ".jpg"), jpeg.tobytes())
        io.write_pfm(os.path.join(scene_dir, "depths", name + ".pfm"), depth)
        io.write_keypoints(os.path.join(scene_dir, "img_kpts", name + ".bin"), kpts)
        cameras[i] = io.Camera(K_orig, t, R, np.zeros(3), np.array([width, height], float))
        views.append({"R": R, "t": t, "pts": pts, "kpts": kpts, "depth_full": depth_full, "depth": depth})
    records = []
    for i in range(num_images):
        for j in range(i + 1, num_images):
            corr = _correspondences(views[i], views[j], K)
            if len(corr):
                records.append(io.CorrRecord(i, j, corr))
    io.write_cameras(os.path.join(scene_dir, "geolabel", "cameras.txt"), cameras)
    io.write_corr(os.path.join(scene_dir, "geolabel", "corr.bin"), records)
    return pid


def _generate_scene_job(args):
    return generate_scene(*args)


def generate(out: str, scenes: int = 4, images_per_scene: int = 6, seed: int = 0, image_size: int = 1000,
             max_keypoints: int = 4000, workers: int = 1, regenerate: bool = False) -> dict:
    """Generates the data set (see the module docstring); returns the parameters written to the marker."""
    if scenes < 1 or images_per_scene < 2:
        raise ValueError(f"need scenes >= 1 and images_per_scene >= 2, got {scenes} and {images_per_scene}")
    if image_size % 4 or image_size < 64:
        raise ValueError(f"image_size must be a multiple of 4 and >= 64, got {image_size}")
    params = {"scenes": scenes, "images_per_scene": images_per_scene, "seed": seed, "image_size": image_size,
              "max_keypoints": max_keypoints, "format": "synthetic-gl3d-v1"}
    marker_path = os.path.join(out, MARKER)
    if os.path.isfile(marker_path) and not regenerate:
        with open(marker_path) as f:
            existing = json.load(f)
        if existing == params:
            log.info("%s: already generated with these arguments", out)
            return params
        raise ValueError(f"{marker_path}: {out} holds a synthetic set made with {existing}; pass --regenerate "
                         f"to replace it")
    os.makedirs(out, exist_ok=True)
    if os.path.exists(marker_path):
        os.remove(marker_path)
    jobs = [(out, seed, i, images_per_scene, image_size, max_keypoints) for i in range(scenes)]
    from tqdm import tqdm

    if workers > 1:
        import multiprocessing

        with multiprocessing.get_context(pool_start_method()).Pool(min(workers, scenes)) as pool:
            pids = list(tqdm(pool.imap(_generate_scene_job, jobs), total=scenes, desc="synthetic GL3D"))
    else:
        pids = [generate_scene(*job) for job in tqdm(jobs, desc="synthetic GL3D")]
    lists = os.path.join(out, "list", SPLIT)
    os.makedirs(lists, exist_ok=True)
    offsets, images, depths, regional = [], [], [], []
    for k, pid in enumerate(pids):
        offsets.append(f"{pid} {k * images_per_scene} {(k + 1) * images_per_scene}")
        for i in range(images_per_scene):
            images.append(f"data/{pid}/undist_images/{i:08d}.jpg")
            depths.append(f"data/{pid}/depths/{i:08d}.pfm")
            regional.append(f"data/{pid}/reg_feat/{i:08d}.bin")
    test = pids[-1:] if scenes > 1 else []
    train = [p for p in pids if p not in test]
    for name, entries in (("image_index_offset.txt", offsets), ("image_list.txt", images),
                          ("depth_list.txt", depths), ("regional_feat_list.txt", regional),
                          ("imageset_train.txt", train), ("imageset_test.txt", test), ("imageset_all.txt", pids)):
        io.write_atomic(os.path.join(lists, name), "".join(e + "\n" for e in entries).encode())
    io.write_atomic(marker_path, json.dumps(params, sort_keys=True).encode())
    return params


def main(argv=None) -> int:
    from absl import flags

    flags.DEFINE_string("out", None, "output folder (the GL3D root to be)", required=True)
    flags.DEFINE_integer("scenes", 4, "number of scenes (the last one is the test scene)")
    flags.DEFINE_integer("images_per_scene", 6, "images per scene")
    flags.DEFINE_integer("seed", 0, "random seed")
    flags.DEFINE_integer("image_size", 1000, "stored image size (GL3D: 1000); depth maps are a quarter of it")
    flags.DEFINE_integer("max_keypoints", 4000, "SIFT keypoints kept per image")
    flags.DEFINE_integer("workers", min(4, os.cpu_count() or 1), "scenes generated in parallel")
    flags.DEFINE_boolean("regenerate", False, "replace an existing synthetic set")
    FLAGS = flags.FLAGS
    FLAGS(argv if argv is not None else sys.argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    try:
        generate(FLAGS.out, FLAGS.scenes, FLAGS.images_per_scene, FLAGS.seed, FLAGS.image_size,
                 FLAGS.max_keypoints, FLAGS.workers, FLAGS.regenerate)
    except ValueError as err:
        log.error("%s", err)
        return 2
    log.info("synthetic GL3D in %s (%.1f s)", FLAGS.out, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
