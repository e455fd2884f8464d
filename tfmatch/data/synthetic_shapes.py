"""Synthetic Shapes: the MagicPoint training data (drawn primitives with their corners as ground truth).

Spec: ``specs/superpoint-posfeat-pump-imp.md`` section 1.2 (our own implementation of the behaviour described
there). Every image is a deterministic function of ``(seed, split, index)``: a random background, one of nine
primitives, Gaussian blur, resize to the training resolution. Training batches then get the photometric and
homographic augmentation of ``magic-point_shapes.yaml``.

Batches (``synthetic_shapes_dataset``): ``image [B,H,W,1]`` float32 0..255, ``keypoint_map [B,H,W]`` float32 (1 at
corners), ``valid_mask [B,H,W]`` float32 (0 where the homographic warp left the image).

On disk (``python -m data_tools.synthetic_shapes --out DIR``): ``DIR/<primitive>/<split>/<index>.png`` (uint8 gray)
and ``<index>.npy`` (corners ``[N, 2]`` float32, (x, y) pixels, integer = pixel centre), ``DIR/.complete`` last.

Speed: drawing and augmenting are numpy/OpenCV, and inside ``tf.data`` (``tf.numpy_function``) they hold the GIL, so
more threads do not help (about 500 images/s whatever the cores), while MagicPoint trains on about 4,300 images/s
on one GPU (docs/benchmarks.md). ``processes=N`` makes the samples in N worker processes instead (each a
deterministic function of its index, as in-process; ``tfmatch/data/worker_pool.py``), e.g.
``synthetic_shapes_dataset.processes = 16``.
"""

from __future__ import annotations

import glob
import math
import os

import cv2
import gin
import numpy as np

from tfmatch.data import homographies

PRIMITIVES = ("draw_lines", "draw_polygon", "draw_multiple_polygons", "draw_ellipses", "draw_star",
              "draw_checkerboard", "draw_stripes", "draw_cube", "gaussian_noise")
# Fraction of each primitive kept in the data set (rpautrat's ``truncate``); the others keep 1.
TRUNCATE = {"draw_ellipses": 0.3, "draw_stripes": 0.2, "gaussian_noise": 0.1}
SPLITS = ("train", "val", "test")
SPLIT_SIZES = {"train": 10000, "val": 200, "test": 500}  # per primitive, before truncation
CANVAS_SIZE = (960, 1280)  # drawing resolution (height, width); every pixel size below is relative to it
IMAGE_SIZE = (120, 160)  # training resolution of magic-point_shapes.yaml
BLUR_SIZE = 21


# -------------------------------------------------------------------------------------------------------------------
# Drawing helpers
def _random_color(rng, background: int) -> int:
    """A grey that differs from the background mean by at least 30 (shifted by 128 otherwise)."""
    color = int(rng.integers(256))
    if abs(color - background) < 30:
        color = (color + 128) % 256
    return color


def _contrasting(rng, reference: int, min_diff: int = 50) -> int:
    color = int(rng.integers(256))
    while abs(color - reference) < min_diff:
        color = int(rng.integers(256))
    return color


def _odd(value: float) -> int:
    value = max(1, int(round(value)))
    return value if value % 2 else value + 1


def _ccw(a, b, c):
    return (c[1] - a[1]) * (b[0] - a[0]) > (b[1] - a[1]) * (c[0] - a[0])


def _segments_intersect(a, b, c, d) -> bool:
    return _ccw(a, c, d) != _ccw(b, c, d) and _ccw(a, b, c) != _ccw(a, b, d)


def _any_intersection(segment, segments) -> bool:
    return any(_segments_intersect(segment[0], segment[1], s[0], s[1]) for s in segments)


def generate_background(rng, size, nb_blobs: int = 100, min_rad_ratio: float = 0.02, max_rad_ratio: float = 0.031,
                        min_kernel: float = 150, max_kernel: float = 500) -> np.ndarray:
    """Thresholded noise, 100 grey disks, a large box blur. Kernel sizes are given for the 960x1280 canvas."""
    h, w = size
    scale = max(h, w) / max(CANVAS_SIZE)
    img = (rng.integers(0, 256, (h, w)) > rng.integers(256)).astype(np.uint8) * 255
    background = int(img.mean())
    max_dim = max(h, w)
    for _ in range(nb_blobs):
        center = (int(rng.integers(w)), int(rng.integers(h)))
        radius = int(rng.integers(max(1, int(min_rad_ratio * max_dim)), max(2, int(max_rad_ratio * max_dim))))
        cv2.circle(img, center, radius, _random_color(rng, background), -1)
    low = int(min_kernel * scale)
    kernel = max(1, int(rng.integers(low, max(low + 1, int(max_kernel * scale)))))
    return cv2.blur(img, (kernel, kernel))


def _blob_texture(rng, size, background: int) -> np.ndarray:
    """Small random disks, blurred: the fill of each polygon of ``draw_multiple_polygons``."""
    h, w = size
    scale = max(h, w) / max(CANVAS_SIZE)
    img = np.full((h, w), _random_color(rng, background), np.uint8)
    for _ in range(max(10, int(3000 * scale * scale))):
        cv2.circle(img, (int(rng.integers(w)), int(rng.integers(h))), max(1, int(rng.integers(1, 20) * scale)),
                   _random_color(rng, background), -1)
    kernel = max(1, int(rng.integers(int(50 * scale) + 1, int(100 * scale) + 2)))
    return cv2.blur(img, (kernel, kernel))


def _keep_corners(points: np.ndarray, radius: float):
    """Drops vertices too close to their neighbour or with an interior angle >= 120 degrees."""
    keep = []
    n = len(points)
    for i in range(n):
        prev, cur, nxt = points[i - 1], points[i], points[(i + 1) % n]
        if np.linalg.norm(cur - prev) < 0.01 * radius + 1:
            continue
        v1, v2 = prev - cur, nxt - cur
        cos = np.dot(v1, v2) / max(np.linalg.norm(v1) * np.linalg.norm(v2), 1e-9)
        if np.arccos(np.clip(cos, -1, 1)) < 2 * np.pi / 3:
            keep.append(cur)
    return np.array(keep, np.float64).reshape(-1, 2)


def _random_polygon(rng, h, w, max_sides=8, radius=None):
    min_dim = min(h, w)
    for _ in range(100):
        n = int(rng.integers(3, max_sides))
        rad = radius if radius is not None else max(rng.random() * min_dim / 2, min_dim / 10)
        x = rng.integers(int(rad), max(int(rad) + 1, int(w - rad)))
        y = rng.integers(int(rad), max(int(rad) + 1, int(h - rad)))
        slices = np.linspace(0, 2 * np.pi, n + 1)
        angles = slices[:-1] + rng.random(n) * (slices[1:] - slices[:-1])
        dist = np.maximum(rng.random(n), 0.4) * rad
        points = np.stack([x + dist * np.cos(angles), y - dist * np.sin(angles)], -1)
        points = _keep_corners(points, rad)
        if len(points) >= 3:
            return points, (x, y), rad
    raise RuntimeError("synthetic_shapes.py: could not draw a polygon with 3 valid corners")


# -------------------------------------------------------------------------------------------------------------------
# The nine primitives: each draws into ``img`` (uint8, modified in place) and returns corners [N, 2] (x, y).
def draw_lines(img, rng, nb_lines=10):
    h, w = img.shape
    background = int(img.mean())
    min_dim = min(h, w)
    segments = []
    for _ in range(int(rng.integers(1, nb_lines))):
        p1 = (int(rng.integers(w)), int(rng.integers(h)))
        p2 = (int(rng.integers(w)), int(rng.integers(h)))
        if _any_intersection((p1, p2), segments):
            continue
        segments.append((p1, p2))
        thickness = int(rng.integers(max(1, int(min_dim * 0.01)), max(2, int(min_dim * 0.02))))
        cv2.line(img, p1, p2, _random_color(rng, background), thickness)
    return np.array([p for s in segments for p in s], np.float64).reshape(-1, 2)


def draw_polygon(img, rng, max_sides=8):
    h, w = img.shape
    points, _, _ = _random_polygon(rng, h, w, max_sides)
    cv2.fillPoly(img, [np.round(points).astype(np.int32)], _random_color(rng, int(img.mean())))
    return points


def draw_multiple_polygons(img, rng, max_sides=8, nb_polygons=30):
    h, w = img.shape
    background = int(img.mean())
    min_dim = min(h, w)
    segments, circles, corners = [], [], []
    for _ in range(nb_polygons):
        points, centre, rad = _random_polygon(rng, h, w, max_sides)  # drawn as draw_polygon (spec, rpautrat)
        edges = [(tuple(points[i - 1]), tuple(points[i])) for i in range(len(points))]
        if any(_any_intersection(e, segments) for e in edges):
            continue
        if any(math.hypot(centre[0] - c[0], centre[1] - c[1]) + min(rad, r) < max(rad, r) for c, r in circles):
            continue  # one circle inside the other: one polygon could contain the other
        segments += edges
        circles.append((centre, rad))
        mask = np.zeros_like(img)
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 255)
        texture = _blob_texture(rng, (h, w), background)
        img[mask > 0] = texture[mask > 0]
        corners.append(points)
    return np.concatenate(corners, 0) if corners else np.zeros((0, 2))


def draw_ellipses(img, rng, nb_ellipses=20):
    h, w = img.shape
    background = int(img.mean())
    min_dim = min(h, w)
    drawn = []
    for _ in range(nb_ellipses):
        ax = max(rng.random() * min_dim / 4, min_dim / 20)
        ay = max(rng.random() * min_dim / 4, min_dim / 20)
        r = max(ax, ay)
        x = rng.integers(int(r), max(int(r) + 1, int(w - r)))
        y = rng.integers(int(r), max(int(r) + 1, int(h - r)))
        if any(math.hypot(x - cx, y - cy) < r + cr for cx, cy, cr in drawn):
            continue
        drawn.append((x, y, r))
        cv2.ellipse(img, (int(x), int(y)), (int(ax), int(ay)), float(rng.random() * 90), 0, 360,
                    _random_color(rng, background), -1)
    return np.zeros((0, 2))


def draw_star(img, rng, nb_branches=6):
    h, w = img.shape
    background = int(img.mean())
    min_dim = min(h, w)
    n = int(rng.integers(3, nb_branches))
    thickness = int(rng.integers(max(1, int(min_dim * 0.01)), max(2, int(min_dim * 0.02))))
    rad = max(rng.random() * min_dim / 2, min_dim / 5)
    x = rng.integers(int(rad), max(int(rad) + 1, int(w - rad)))
    y = rng.integers(int(rad), max(int(rad) + 1, int(h - rad)))
    slices = np.linspace(0, 2 * np.pi, n + 1)
    angles = slices[:-1] + rng.random(n) * (slices[1:] - slices[:-1])
    dist = np.maximum(rng.random(n), 0.3) * rad
    tips = np.stack([x + dist * np.cos(angles), y - dist * np.sin(angles)], -1)
    points = np.concatenate([[[x, y]], tips], 0).astype(np.float64)
    for tip in np.round(tips).astype(int):
        cv2.line(img, (int(x), int(y)), (int(tip[0]), int(tip[1])), _random_color(rng, background), thickness)
    return points


def _random_board_warp(rng, board_corners, h, w, transform_params):
    """A random affine (corner jitter alpha) followed by a random perspective (alpha / 2) of a board."""
    alpha = max(h, w) * (transform_params[0] + rng.random() * transform_params[1])
    src = board_corners.astype(np.float32)
    affine = cv2.getAffineTransform(src[:3], (src[:3] + rng.uniform(-alpha, alpha, (3, 2))).astype(np.float32))
    affine = np.vstack([affine, [0, 0, 1]])
    moved = homographies.warp_points(affine, src)
    jittered = moved + rng.uniform(-alpha / 2, alpha / 2, moved.shape)
    perspective = cv2.getPerspectiveTransform(moved.astype(np.float32), jittered.astype(np.float32))
    return perspective @ affine


def _fill_quad(img, quad, color):
    cv2.fillConvexPoly(img, np.round(quad).astype(np.int32), int(color))


def draw_checkerboard(img, rng, max_rows=7, max_cols=7, transform_params=(0.05, 0.15)):
    h, w = img.shape
    background = int(img.mean())
    rows, cols = int(rng.integers(3, max_rows)), int(rng.integers(3, max_cols))
    side = min((w - 1) // cols, (h - 1) // rows)
    xs, ys = np.meshgrid(np.arange(cols + 1) * side, np.arange(rows + 1) * side)
    grid = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float64)  # [(rows+1)*(cols+1), 2]
    corners = np.array([[0, 0], [cols * side, 0], [cols * side, rows * side], [0, rows * side]], np.float64)
    transform = _random_board_warp(rng, corners, h, w, transform_params)
    warped = homographies.warp_points(transform, grid).reshape(rows + 1, cols + 1, 2)
    colors = np.zeros((rows, cols), int)
    for i in range(rows):
        for j in range(cols):
            neighbours = ([colors[i - 1, j]] if i else []) + ([colors[i, j - 1]] if j else [])
            color = int(rng.integers(256))
            while any(abs(color - c) < 50 for c in neighbours):
                color = int(rng.integers(256))
            colors[i, j] = color
            _fill_quad(img, [warped[i, j], warped[i, j + 1], warped[i + 1, j + 1], warped[i + 1, j]], color)
    thickness = max(1, int(min(h, w) * 0.01))
    for _ in range(int(rng.integers(0, rows + cols + 2))):  # thick lines along grid lines
        if rng.random() < 0.5:
            i = int(rng.integers(rows + 1))
            a, b = warped[i, 0], warped[i, cols]
        else:
            j = int(rng.integers(cols + 1))
            a, b = warped[0, j], warped[rows, j]
        cv2.line(img, tuple(np.round(a).astype(int).tolist()), tuple(np.round(b).astype(int).tolist()),
                 _random_color(rng, background), thickness)
    points = warped.reshape(-1, 2)
    return points[homographies.points_inside(points, h, w)]


def draw_stripes(img, rng, max_stripes=13, min_width_ratio=0.04, transform_params=(0.1, 0.1)):
    h, w = img.shape
    background = int(img.mean())
    board_h, board_w = int(h * (1 + rng.random())), int(w * (1 + rng.random()))
    n = int(rng.integers(5, max_stripes))
    min_width = min_width_ratio * min(h, w)
    for _ in range(100):
        cuts = np.sort(rng.uniform(0, board_w, n - 1))
        edges = np.concatenate([[0.0], cuts, [float(board_w)]])
        if np.diff(edges).min() >= min_width:
            break
    else:
        edges = np.linspace(0, board_w, n + 1)
    # The board covers the image horizontally; vertically it is placed so that its top or bottom edge (where
    # the stripe corners are) often falls inside the image.
    offset = np.array([rng.uniform(w - board_w, 0), rng.uniform(0.2 * h - board_h, 0.8 * h)])
    corners = np.array([[0, 0], [board_w, 0], [board_w, board_h], [0, board_h]], np.float64) + offset
    transform = _random_board_warp(rng, corners, h, w, transform_params)
    top = np.stack([edges, np.zeros_like(edges)], -1) + offset
    bottom = np.stack([edges, np.full_like(edges, board_h)], -1) + offset
    top_w, bottom_w = homographies.warp_points(transform, top), homographies.warp_points(transform, bottom)
    color = int(rng.integers(256))
    for k in range(n):
        color = _contrasting(rng, color)
        _fill_quad(img, [top_w[k], top_w[k + 1], bottom_w[k + 1], bottom_w[k]], color)
    thickness = max(1, int(min(h, w) * 0.01))
    for _ in range(int(rng.integers(0, 5))):  # random lines along stripe borders and board edges
        k = int(rng.integers(n + 1))
        a, b = (top_w[k], bottom_w[k]) if rng.random() < 0.7 else (top_w[0], top_w[n])
        cv2.line(img, tuple(np.round(a).astype(int).tolist()), tuple(np.round(b).astype(int).tolist()),
                 _random_color(rng, background), thickness)
    points = np.concatenate([top_w[1:-1], bottom_w[1:-1]], 0)  # stripe borders; the board's sides are not drawn
    return points[homographies.points_inside(points, h, w)]


# Faces as cycles of vertex indices (vertex v = (bit0, bit1, bit2) of v).
_CUBE_FACES = ((0, 1, 3, 2), (4, 5, 7, 6), (0, 1, 5, 4), (2, 3, 7, 6), (0, 2, 6, 4), (1, 3, 7, 5))


def draw_cube(img, rng, min_size_ratio=0.2, scale_interval=(0.4, 1.0), trans_interval=(0.5, 0.2)):
    h, w = img.shape
    background = int(img.mean())
    min_dim = min(h, w)
    size = min_dim * min_size_ratio + rng.random() * min_dim * 2 / 3
    # Vertex v has coordinates (bit0, bit1, bit2) * size; vertex 0 is the origin.
    vertices = np.array([[(v >> 0) & 1, (v >> 1) & 1, (v >> 2) & 1] for v in range(8)], np.float64) * size
    vertices *= rng.uniform(scale_interval[0], scale_interval[1], 3)
    centre3d = vertices.mean(0)
    rx, ry, rz = rng.uniform(np.pi / 10, 4 * np.pi / 10, 3)
    rot_x = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    rot_y = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    rot_z = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
    rotated = (vertices - centre3d) @ (rot_z @ rot_y @ rot_x).T
    shift = np.array([w * trans_interval[0], h * trans_interval[0]]) + rng.uniform(-1, 1, 2) * trans_interval[1] * size
    projected = rotated[:, :2] + shift  # orthographic; the viewer looks along -z
    # A face is visible when its outward normal points to the viewer (+z).
    visible = []
    for face in _CUBE_FACES:
        normal = rotated[list(face)].mean(0)  # centre of the cube is the origin, so this points outwards
        if normal[2] > 1e-9:
            visible.append(face)
    face_color = _random_color(rng, background)
    edge_color = _contrasting(rng, face_color)
    thickness = max(1, int(min_dim * 0.01))
    for face in visible:
        _fill_quad(img, projected[list(face)], face_color)
    for face in visible:
        quad = np.round(projected[list(face)]).astype(np.int32)
        cv2.polylines(img, [quad], True, edge_color, thickness)
    shown = sorted({v for face in visible for v in face})
    points = projected[shown]
    return points[homographies.points_inside(points, h, w)]


def gaussian_noise(img, rng):
    img[...] = rng.integers(0, 256, img.shape).astype(np.uint8)
    return np.zeros((0, 2))


# -------------------------------------------------------------------------------------------------------------------
# Samples
def generate_shape(rng, primitive: str, image_size=IMAGE_SIZE, canvas_size=CANVAS_SIZE, blur_size=BLUR_SIZE):
    """Draws one image of a primitive and returns ``(image [H,W] uint8, corners [N,2] float32 (x, y))`` at
    ``image_size``; drawing happens at ``canvas_size`` (blur scaled with it)."""
    if primitive not in PRIMITIVES:
        raise ValueError(f"synthetic_shapes.py: unknown primitive {primitive!r}; known: {PRIMITIVES}")
    ch, cw = canvas_size
    img = generate_background(rng, (ch, cw))
    points = np.asarray(globals()[primitive](img, rng), np.float64).reshape(-1, 2)
    blur = _odd(blur_size * max(ch, cw) / max(CANVAS_SIZE))
    img = cv2.GaussianBlur(img, (blur, blur), 0)
    h, w = image_size
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    # cv2.resize aligns pixel centres: x_out = (x_in + 0.5) * s - 0.5.
    points = (points + 0.5) * np.array([w / cw, h / ch]) - 0.5
    points = points[homographies.points_inside(points, h, w)]
    return img, points.astype(np.float32)


def split_size(primitive: str, split: str, sizes=None) -> int:
    sizes = dict(SPLIT_SIZES, **(sizes or {}))
    return int(round(sizes[split] * TRUNCATE.get(primitive, 1.0)))


def sample_primitive(rng, primitives=PRIMITIVES) -> str:
    weights = np.array([TRUNCATE.get(p, 1.0) for p in primitives])
    return primitives[int(rng.choice(len(primitives), p=weights / weights.sum()))]


def _split_id(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"synthetic_shapes.py: split must be one of {SPLITS}, got {split!r}")
    return SPLITS.index(split)


def photometric_augmentation(image: np.ndarray, rng) -> np.ndarray:
    """magic-point_shapes.yaml: brightness, contrast, Gaussian noise, speckle, additive shade, motion blur, in a
    random order. Shape: ``[H, W]`` float32 0..255 -> the same."""
    image = image.astype(np.float32)
    h, w = image.shape

    def brightness(x):
        return x + rng.uniform(-75, 75)

    def contrast(x):
        mean = x.mean()
        return (x - mean) * rng.uniform(0.3, 1.8) + mean

    def noise(x):
        return x + rng.normal(0, rng.uniform(0, 15), x.shape)

    def speckle(x):
        p = rng.uniform(0, 0.0035)
        draw = rng.random(x.shape)
        x = x.copy()
        x[draw < p] = 0.0
        x[draw > 1 - p] = 255.0
        return x

    def shade(x):
        mask = np.zeros((h, w), np.float32)
        min_dim = min(h, w) / 4
        for _ in range(20):
            ax, ay = int(max(rng.random() * min_dim, min_dim / 5)), int(max(rng.random() * min_dim, min_dim / 5))
            cx, cy = int(rng.integers(ax, max(ax + 1, w - ax))), int(rng.integers(ay, max(ay + 1, h - ay)))
            cv2.ellipse(mask, (cx, cy), (ax, ay), float(rng.random() * 90), 0, 360, 255, -1)
        transparency = rng.uniform(-0.5, 0.8)
        kernel = _odd(rng.integers(50, 100))
        mask = cv2.GaussianBlur(mask, (kernel, kernel), 0)
        return x * (1 - transparency * mask / 255.0)

    def motion_blur(x):
        size = int(rng.integers(0, 4)) * 2 + 1  # up to 7
        if size == 1:
            return x
        kernel = np.zeros((size, size), np.float32)
        mode = rng.integers(3)
        if mode == 0:
            kernel[size // 2, :] = 1
        elif mode == 1:
            kernel[:, size // 2] = 1
        else:
            np.fill_diagonal(kernel, 1)
        return cv2.filter2D(x, -1, kernel / kernel.sum())

    ops = [brightness, contrast, noise, speckle, shade, motion_blur]
    for index in rng.permutation(len(ops)):
        image = np.clip(ops[index](image), 0, 255)
    return image.astype(np.float32)


def homographic_augmentation(image, points, rng, config=homographies.MAGICPOINT_AUGMENTATION, erosion_radius=2):
    """Warps an image and its corners by a sampled homography; returns ``(image, points, valid_mask)``."""
    h, w = image.shape
    homography = homographies.sample_homography(rng, h, w, config)
    warped = homographies.warp_image(image, homography, h, w)
    points = homographies.warp_points(homography, points)
    points = points[homographies.points_inside(points, h, w)]
    mask = homographies.valid_mask(homography, h, w, h, w, erosion_radius)
    return warped, points, mask


class SyntheticShapes:
    """Index -> sample, either drawn on the fly or read from a directory written by ``data_tools.synthetic_shapes``.

    ``sample(index)`` returns ``(image [H,W] float32 0..255, keypoint_map [H,W], valid_mask [H,W])``.
    """

    def __init__(self, split: str, seed: int = 0, image_size=IMAGE_SIZE, canvas_size=CANVAS_SIZE,
                 data_dir: str | None = None, primitives=PRIMITIVES, augment: bool | None = None):
        self.split = split
        self.split_id = _split_id(split)
        self.seed = int(seed)
        self.image_size = tuple(int(s) for s in image_size)
        self.canvas_size = tuple(int(s) for s in canvas_size)
        self.primitives = tuple(primitives)
        self.augment = (split == "train") if augment is None else bool(augment)
        self.files = None
        self._order, self._order_epoch = None, None
        if data_dir:
            if not os.path.isfile(os.path.join(data_dir, ".complete")):
                raise FileNotFoundError(f"{data_dir}: no .complete marker; write the set with "
                                        "python -m data_tools.synthetic_shapes --out DIR")
            self.files = sorted(f for p in self.primitives
                                for f in glob.glob(os.path.join(data_dir, p, split, "*.png")))
            if not self.files:
                raise FileNotFoundError(f"{data_dir}: no images for split {split!r} and primitives {self.primitives}")

    def __len__(self):
        return len(self.files) if self.files is not None else sum(split_size(p, self.split) for p in self.primitives)

    def drawn(self, index: int):
        """The un-augmented image and corners of an index (on the fly; deterministic)."""
        rng = np.random.default_rng([self.seed, self.split_id, int(index)])
        return generate_shape(rng, sample_primitive(rng, self.primitives), self.image_size, self.canvas_size)

    def _file(self, index: int) -> str:
        """The file of a training index: every pass over the set in its own order (a permutation drawn from the seed
        and the pass number), so that a batch mixes the primitives; sorted order would give batches of one primitive
        in long blocks, and a checkpoint's mAP would depend on the block it was taken in (docs/benchmarks.md).
        Other splits are read in sorted order."""
        epoch, position = divmod(int(index), len(self.files))
        if self.split != "train":
            return self.files[position]
        if self._order_epoch != epoch:
            self._order = np.random.default_rng([self.seed, self.split_id, epoch, 2]).permutation(len(self.files))
            self._order_epoch = epoch
        return self.files[self._order[position]]

    def _read(self, index: int):
        path = self._file(index)
        image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise OSError(f"{path}: cannot read image")
        points_path = path[:-4] + ".npy"
        try:
            points = np.load(points_path).astype(np.float32).reshape(-1, 2)
        except (OSError, ValueError) as err:
            raise OSError(f"{points_path}: cannot read corners ({err})") from err
        if image.shape != self.image_size:
            sy, sx = self.image_size[0] / image.shape[0], self.image_size[1] / image.shape[1]
            image = cv2.resize(image, self.image_size[::-1], interpolation=cv2.INTER_LINEAR)
            points = (points + 0.5) * np.array([sx, sy], np.float32) - 0.5
        return image, points

    def sample(self, index: int):
        if self.files is not None:
            image, points = self._read(index)
        else:
            image, points = self.drawn(index)
        image = image.astype(np.float32)
        h, w = image.shape
        mask = np.ones((h, w), np.float32)
        if self.augment:
            rng = np.random.default_rng([self.seed, self.split_id, int(index), 1])
            image = photometric_augmentation(image, rng)
            image, points, mask = homographic_augmentation(image, points, rng)
        return image.astype(np.float32), homographies.keypoint_map(points, h, w), mask


@gin.configurable
def synthetic_shapes_dataset(split: str, global_batch_size: int, input_context=None, image_size=IMAGE_SIZE,
                             canvas_size=CANVAS_SIZE, data_dir: str | None = None, primitives=PRIMITIVES,
                             seed: int = 0, num_parallel_calls: int | None = None, max_examples: int | None = None,
                             processes: int = 0):
    """tf.data pipeline of Synthetic Shapes batches (see the module docstring).

    ``split == "train"`` is infinite: on the fly, every index is a new image; from ``data_dir`` the files repeat.
    Other splits are one pass over ``max_examples`` (default: the split size). Deterministic for a given seed.
    ``processes > 0``: the samples are made in that many worker processes (the same samples, in the same order).
    """
    import tensorflow as tf

    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    source = SyntheticShapes(split, seed, image_size, canvas_size, data_dir, primitives)
    h, w = source.image_size
    if h % 8 or w % 8:
        raise ValueError(f"synthetic_shapes.py: image_size must be multiples of 8, got {image_size}")
    if processes < 0:
        raise ValueError(f"synthetic_shapes.py: processes must be >= 0, got {processes}")
    stop = None if split == "train" else (len(source) if max_examples is None else int(max_examples))
    indices = tf.data.Dataset.counter() if stop is None else tf.data.Dataset.range(stop)
    batch_size = global_batch_size
    first, stride = 0, 1
    if input_context is not None:
        first, stride = input_context.input_pipeline_id, input_context.num_input_pipelines
        indices = indices.shard(stride, first)
        batch_size = input_context.get_per_replica_batch_size(global_batch_size)
    options = tf.data.Options()
    options.deterministic = True
    if processes:
        from tfmatch.data.worker_pool import process_dataset

        args = (split, seed, source.image_size, source.canvas_size, data_dir, tuple(primitives))
        dataset = process_dataset(SyntheticShapes, args, ("image", "keypoint_map", "valid_mask"), [(h, w)] * 3,
                                  processes, first, stride, stop, batch_size, drop_remainder=split == "train",
                                  transport={"keypoint_map": np.uint8, "valid_mask": np.uint8})  # binary maps
        return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)

    def load(index):
        image, kmap, mask = tf.numpy_function(lambda i: source.sample(int(i)), [index],
                                              (tf.float32, tf.float32, tf.float32), stateful=False)
        image.set_shape((h, w))
        kmap.set_shape((h, w))
        mask.set_shape((h, w))
        return {"image": image[..., None], "keypoint_map": kmap, "valid_mask": mask}

    dataset = indices.map(load, num_parallel_calls=num_parallel_calls or tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=split == "train")
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
