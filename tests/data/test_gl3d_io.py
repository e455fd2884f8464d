"""Known-answer tests of the GL3D readers and writers (tfmatch.data.gl3d_io)."""

import math
import struct

import cv2
import numpy as np
import pytest

from tfmatch.data import gl3d_io as io
from tfmatch.data.gl3d_io import GL3DFormatError

# The first camera line of GL3D's docs/data_format.md.
GL3D_CAMERA_LINE = ("0 3995.67 3995.67 2304 1728 0 63.6722 -28.8643 53.9166 0.919771 -0.39198 0.0192924 -0.390128 "
                    "-0.918559 -0.0636394 0.0426665 0.0510072 -0.997786 0.0131149 0.0165777 -0.0248811 4608 3456")


def test_pfm_is_flipped_to_top_down(tmp_path):
    path = tmp_path / "d.pfm"
    # PFM stores the bottom row first: file rows [4 5 6] then [1 2 3] mean the image [[1 2 3], [4 5 6]].
    path.write_bytes(b"Pf\n3 2\n-1.0\n" + np.array([4, 5, 6, 1, 2, 3], "<f4").tobytes())
    np.testing.assert_array_equal(io.read_pfm(str(path)), [[1, 2, 3], [4, 5, 6]])
    # A positive scale means big-endian data.
    path.write_bytes(b"Pf\n2 1\n1.0\n" + np.array([7, 8], ">f4").tobytes())
    np.testing.assert_array_equal(io.read_pfm(str(path)), [[7, 8]])
    depth = np.arange(12, dtype=np.float32).reshape(3, 4)
    io.write_pfm(str(path), depth)
    np.testing.assert_array_equal(io.read_pfm(str(path)), depth)


def test_bad_pfm_names_the_file(tmp_path):
    path = tmp_path / "bad.pfm"
    path.write_bytes(b"Pf\n250 250\n-1.0\n" + b"\0" * 1000)
    with pytest.raises(GL3DFormatError, match=r"bad\.pfm: truncated PFM"):
        io.read_pfm(str(path))
    path.write_bytes(b"P6\n2 2\n255\n" + b"\0" * 12)
    with pytest.raises(GL3DFormatError, match=r"bad\.pfm: not a PFM file"):
        io.read_pfm(str(path))
    with pytest.raises(GL3DFormatError, match=r"missing\.pfm: cannot read"):
        io.read_pfm(str(tmp_path / "missing.pfm"))


def test_corr_reads_little_endian_uint64_headers(tmp_path):
    rows_a = np.arange(30, dtype=np.float32).reshape(2, 15)
    rows_b = -np.arange(15, dtype=np.float32).reshape(1, 15)
    payload = (struct.pack("<QQQ", 0, 3, 2) + rows_a.astype("<f4").tobytes()
               + struct.pack("<QQQ", 1, 2, 1) + rows_b.astype("<f4").tobytes())
    path = tmp_path / "corr.bin"
    path.write_bytes(payload)
    records = io.read_corr(str(path))
    assert [(r.idx0, r.idx1, r.corr.shape) for r in records] == [(0, 3, (2, 15)), (1, 2, (1, 15))]
    np.testing.assert_array_equal(records[0].corr, rows_a)
    np.testing.assert_array_equal(records[1].corr, rows_b)
    io.write_corr(str(tmp_path / "copy.bin"), records)
    assert (tmp_path / "copy.bin").read_bytes() == payload
    path.write_bytes(payload[:-8])
    with pytest.raises(GL3DFormatError, match=r"corr\.bin: record 1 \(1, 2\) announces 1 correspondences"):
        io.read_corr(str(path))
    path.write_bytes(payload[:30])
    with pytest.raises(GL3DFormatError, match=r"corr\.bin: record 0 .* announces 2"):
        io.read_corr(str(path))


def test_cameras_known_answer_and_malformed_lines(tmp_path):
    path = tmp_path / "cameras.txt"
    path.write_text(GL3D_CAMERA_LINE + "\n")
    cam = io.read_cameras(str(path))[0]
    np.testing.assert_allclose(cam.K, [[3995.67, 0, 2304], [0, 3995.67, 1728], [0, 0, 1]])
    np.testing.assert_allclose(cam.t, [63.6722, -28.8643, 53.9166])
    np.testing.assert_allclose(cam.R[1], [-0.390128, -0.918559, -0.0636394])
    np.testing.assert_allclose(cam.dist, [0.0131149, 0.0165777, -0.0248811])
    np.testing.assert_array_equal(cam.size, [4608, 3456])
    io.write_cameras(str(tmp_path / "copy.txt"), {0: cam})
    again = io.read_cameras(str(tmp_path / "copy.txt"))[0]
    np.testing.assert_array_equal(again.R, cam.R)

    path.write_text(GL3D_CAMERA_LINE + "\n" + GL3D_CAMERA_LINE.rsplit(" ", 1)[0] + "\n")
    with pytest.raises(GL3DFormatError, match=r"cameras\.txt:2: expected 23 fields, got 22"):
        io.read_cameras(str(path))
    path.write_text(GL3D_CAMERA_LINE.replace("3995.67", "x", 1) + "\n")
    with pytest.raises(GL3DFormatError, match=r"cameras\.txt:1: non-numeric"):
        io.read_cameras(str(path))
    path.write_text(GL3D_CAMERA_LINE.replace("0.919771", "9.19771") + "\n")
    with pytest.raises(GL3DFormatError, match=r"cameras\.txt:1: rotation has determinant"):
        io.read_cameras(str(path))


def test_keypoint_files(tmp_path):
    path = tmp_path / "00000000.bin"
    kpts = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    io.write_keypoints(str(path), kpts)
    np.testing.assert_array_equal(io.read_keypoints(str(path)), kpts)
    path.write_bytes(kpts.tobytes()[:-4])
    with pytest.raises(GL3DFormatError, match=r"00000000\.bin: 116 bytes is not a whole number"):
        io.read_keypoints(str(path))
    np.testing.assert_allclose(io.affine_centres_to_pixels(np.array([[0, 0, -1, 0, 0, 0.5]]), (1000, 800)),
                               [[0, 600]])


def test_match_set_record_layout(tmp_path):
    assert io.match_set_bytes(1024) == 53432 and io.match_set_floats(1024) == 13358
    assert io.match_set_bytes(8) == 4 * (46 + 13 * 8)
    rng = np.random.default_rng(1)
    k0, k1, geo = rng.normal(size=(8, 6)), rng.normal(size=(8, 6)), rng.uniform(size=8)
    R, t = rng.normal(size=(3, 3)), rng.normal(size=3)
    payload = io.pack_match_set(10, 12, 5, (1200, 900), (1000, 1000), np.eye(3) * 2, np.eye(3) * 3,
                                np.ones((3, 3)), R, t, k0, k1, geo)
    v = np.frombuffer(payload, "<f4")
    np.testing.assert_array_equal(v[:7], [10, 12, 5, 1200, 900, 1000, 1000])  # the parser's order (spec 1.3)
    np.testing.assert_allclose(v[34:46].reshape(3, 4), np.c_[R, t], rtol=1e-6)
    np.testing.assert_allclose(v[46:52], k0[0], rtol=1e-6)
    parsed = io.parse_match_set(payload, 8)
    assert (parsed["index0"], parsed["index1"], parsed["num_inliers"]) == (10, 12, 5)
    np.testing.assert_allclose(parsed["kpt_affine1"], k1, rtol=1e-6)
    np.testing.assert_allclose(parsed["geo_sim"], geo, rtol=1e-6)
    np.testing.assert_allclose(parsed["K1"], np.eye(3) * 3)
    path = tmp_path / "0_0_5_3.match_set"
    path.write_bytes(payload + b"\0\0\0\0")
    with pytest.raises(GL3DFormatError, match=r"0_0_5_3\.match_set: expected 600 bytes per record \(num_corr=8\)"):
        io.read_match_set(str(path), 8)
    assert io.parse_match_set_name("17_0_12_45.match_set") == (17, 12, 45)
    assert io.match_set_name(17, 12, 45) == "17_0_12_45.match_set"


def test_relative_pose_essential_and_rotation_angle():
    R0, t0 = np.eye(3), np.zeros(3)
    R1 = cv2.Rodrigues(np.array([0.0, 0.0, math.pi / 2]))[0]
    t1 = np.array([1.0, 0.0, 0.0])
    R, t = io.relative_pose(R0, t0, R1, t1)
    np.testing.assert_allclose(R, R1)
    np.testing.assert_allclose(t, t1)
    assert io.rotation_angle_deg(R0, R1) == pytest.approx(90.0)
    # Same relative pose from non-trivial absolute poses.
    Rw = cv2.Rodrigues(np.array([0.3, -0.2, 0.1]))[0]
    tw = np.array([0.5, 2.0, -1.0])
    Ra, ta = io.relative_pose(R0 @ Rw, R0 @ tw + t0, R1 @ Rw, R1 @ tw + t1)
    np.testing.assert_allclose(Ra, R1, atol=1e-12)
    np.testing.assert_allclose(ta, t1, atol=1e-12)
    E = io.essential_matrix(R0, t0, R1, t1)
    assert np.linalg.norm(E) == pytest.approx(1.0)
    X = np.array([0.3, -0.4, 5.0])
    x0, x1 = X / X[2], (R1 @ X + t1) / (R1 @ X + t1)[2]
    assert abs(x1 @ E @ x0) < 1e-12
    np.testing.assert_allclose(E, np.array([[0, 0, 0], [0, 0, -1], [0, 1, 0]]) @ R1 / math.sqrt(2), atol=1e-12)


def test_undistort_keypoints_inverts_the_distortion_model():
    K = np.array([[800.0, 0, 640], [0, 800.0, 480], [0, 0, 1]])
    cam = io.Camera(K, np.zeros(3), np.eye(3), np.array([-0.1, 0.02, 0.001]), np.array([1280.0, 960.0]))
    ideal = np.array([[100.0, 100.0], [640.0, 480.0], [1200.0, 900.0], [300.0, 700.0]])
    normalised = np.c_[(ideal - K[:2, 2]) / 800.0, np.zeros(4)]
    dist5 = np.array([cam.dist[0], cam.dist[1], 0, 0, cam.dist[2]])
    distorted = cv2.projectPoints(normalised, np.zeros(3), np.zeros(3), K, dist5)[0][:, 0]
    kpts = np.zeros((4, 6), np.float32)
    kpts[:, 0] = kpts[:, 4] = 0.01
    kpts[:, 2] = (distorted[:, 0] - 640) / 640
    kpts[:, 5] = (distorted[:, 1] - 480) / 480
    out = io.undistort_keypoints(kpts, cam)
    np.testing.assert_allclose(io.affine_centres_to_pixels(out, cam.size), ideal, atol=0.05)
    np.testing.assert_array_equal(out[:, [0, 1, 3, 4]], kpts[:, [0, 1, 3, 4]])  # the shape part is untouched
    assert not np.allclose(distorted, ideal, atol=1.0)  # the test would be vacuous without real distortion


def test_lists_are_cross_checked(tmp_path):
    folder = tmp_path / "list" / "s"
    folder.mkdir(parents=True)
    (folder / "image_index_offset.txt").write_text("a 0 2\nb 3 4\n")
    with pytest.raises(GL3DFormatError, match=r"image_index_offset\.txt:2: .*expected start 2"):
        io.read_split_lists(str(tmp_path), "s")
    (folder / "image_index_offset.txt").write_text("a 0 2\nb 2 4\n")
    (folder / "image_list.txt").write_text("x\ny\nz\n")
    (folder / "depth_list.txt").write_text("x\ny\nz\nw\n")
    with pytest.raises(GL3DFormatError, match=r"image_list\.txt: has 3 entries, image_index_offset\.txt covers 4"):
        io.read_split_lists(str(tmp_path), "s")
    (folder / "image_list.txt").write_text("x\ny\nz\nw\n")
    lists = io.read_split_lists(str(tmp_path), "s")
    assert lists.scenes[1] == io.SceneRange("b", 2, 4) and lists.regional_features is None
    with pytest.raises(GL3DFormatError, match="split folder does not exist"):
        io.read_split_lists(str(tmp_path), "nope")
