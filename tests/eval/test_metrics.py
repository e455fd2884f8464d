"""Known-answer tests of the evaluation metrics, matchers and pose estimation (numpy / OpenCV only)."""

import h5py
import numpy as np
import pytest

from tfmatch.eval import hpatches, io, metrics, pipeline, pose
from tfmatch.eval.matchers import mutual_nearest_neighbour, ratio_test


def _features(keypoints, size=(200, 150), descriptors=None, seed=0):
    rng = np.random.default_rng(seed)
    n = len(keypoints)
    if descriptors is None:
        descriptors = rng.normal(size=(n, 16)).astype(np.float32)
    return {"keypoints": np.asarray(keypoints, np.float32), "scores": rng.uniform(size=n).astype(np.float32),
            "descriptors": descriptors, "image_size": np.array(size)}


def _grid(width=200, height=150, step=11):
    xs, ys = np.meshgrid(np.arange(5, width - 5, step), np.arange(5, height - 5, step))
    return np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)


def test_identity_homography_gives_mma_one_and_homography_accuracy_one():
    kp = _grid() + np.random.default_rng(1).uniform(-0.4, 0.4, size=(len(_grid()), 2))
    f0 = _features(kp)
    record = hpatches.pair_metrics(f0, dict(f0), np.arange(len(kp)), np.eye(3), hpatches.HPatchesProtocol())
    record["sequence"] = "v_x"
    summary = hpatches.summarize([record], hpatches.HPatchesProtocol())
    assert summary["mma"] == {str(t): 1.0 for t in range(1, 11)}
    assert summary["homography_accuracy"] == {"1": 1.0, "3": 1.0, "5": 1.0}
    assert summary["repeatability"] == 1.0 and summary["localization_error"] == 0.0
    assert summary["nn_map"] == 1.0 and summary["mma_i"] is None
    assert record["corner_error"] < 1e-6


def test_shifted_keypoints_give_the_expected_errors():
    kp0 = _grid()
    kp1 = kp0 + [3.0, 4.0]  # every match is 5 px off under the identity
    errors = metrics.match_errors(kp0, kp1, np.arange(len(kp0)), np.eye(3))
    np.testing.assert_allclose(errors, 5.0, atol=1e-9)
    np.testing.assert_array_equal(metrics.matching_accuracy(errors, range(1, 11)), [0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    H_est, inliers = hpatches.estimate_homography(kp0, kp1)
    assert inliers.all()
    assert metrics.corner_error(H_est, np.eye(3), 200, 150) == pytest.approx(5.0, abs=1e-6)
    # The same offset in the ground truth: exact.
    H_true = np.array([[1, 0, 3], [0, 1, 4], [0, 0, 1.0]])
    assert metrics.match_errors(kp0, kp1, np.arange(len(kp0)), H_true).max() < 1e-9
    # Repeatability: 2 px off counts (eps 3) with localisation error 2; 4 px off does not.
    s = np.ones(len(kp0))
    assert metrics.repeatability(kp0, s, kp0 + [2, 0], s, np.eye(3), (400, 400), (400, 400)) == (1.0, 2.0)
    assert metrics.repeatability(kp0, s, kp0 + [4, 0], s, np.eye(3), (400, 400), (400, 400))[0] == 0.0


def test_warp_points_and_corner_error_of_a_known_homography():
    H = np.array([[2.0, 0, 1], [0, 2.0, -1], [0, 0, 1]])
    np.testing.assert_allclose(metrics.warp_points(H, [[0, 0], [1, 2]]), [[1, -1], [3, 3]])
    # Estimate off by a 1 px translation everywhere: every corner is 1 px off.
    assert metrics.corner_error(np.array([[2.0, 0, 2], [0, 2, -1], [0, 0, 1]]), H, 10, 10) == pytest.approx(1.0)
    assert metrics.corner_error(None, H, 10, 10) == np.inf


def test_average_precision_known_answer():
    assert metrics.average_precision([1, 0, 1], [3, 2, 1]) == pytest.approx((1 + 2 / 3) / 2)
    assert metrics.average_precision([0, 1], [2, 1]) == pytest.approx(0.5)
    assert metrics.average_precision([0, 0], [2, 1]) == 0.0


def test_pose_auc_known_answer():
    # errors [1, inf]: recall curve (0,0) (1,0.5) then flat at 0.5 to 5 -> (0.25 + 2) / 5.
    assert metrics.pose_auc([1.0, np.inf], [5]) == [pytest.approx(0.45)]
    assert metrics.pose_auc([0.0, 0.0], [5, 10, 20]) == [pytest.approx(1.0)] * 3
    assert metrics.pose_auc([30.0], [5, 10]) == [0.0, 0.0]


def test_matchers_known_answer():
    d1 = np.eye(4, dtype=np.float32)
    d0 = d1[[2, 0, 3]] + 0.01  # rows of d1 in another order
    matches0, scores0 = mutual_nearest_neighbour(d0, d1)
    np.testing.assert_array_equal(matches0, [2, 0, 3])
    assert (scores0 > 0.9).all()
    # Two equally near neighbours: the ratio test rejects, mutual NN keeps one.
    d0 = np.array([[1.0, 1.0, 0, 0]]) / np.sqrt(2)
    assert ratio_test(d0, d1[:2], ratio=0.8)[0][0] == -1
    assert mutual_nearest_neighbour(np.zeros((0, 4)), d1)[0].shape == (0,)


@pytest.mark.parametrize("rot", [1, 2, 3])
def test_rotate_points_back_inverts_rot90(rot):
    image = np.arange(7 * 5).reshape(7, 5)  # height 7, width 5
    rotated = np.rot90(image, rot)
    ys, xs = np.nonzero(np.ones_like(rotated))
    back = pipeline.rotate_points_back(np.stack([xs, ys], 1), rot, width=5, height=7).astype(int)
    np.testing.assert_array_equal(rotated[ys, xs], image[back[:, 1], back[:, 0]])


def _two_view_scene(seed=0):
    rng = np.random.default_rng(seed)
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    points = np.stack([rng.uniform(-2, 2, 200), rng.uniform(-1.5, 1.5, 200), rng.uniform(4, 8, 200)], 1)
    angle = np.deg2rad(10)
    R = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    t = np.array([-1.0, 0.1, 0.2])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    project = lambda X: (X @ K.T)[:, :2] / X[:, 2:]  # noqa: E731
    return K, T, project(points), project(points @ R.T + t)


def test_pose_from_exact_matches_has_zero_error_and_auc_one(tmp_path):
    K, T, x0, x1 = _two_view_scene()
    R, t, inliers = pose.estimate_pose(x0, x1, K, K, threshold_px=1.0)
    error_R, error_t = metrics.pose_errors(R, t, T)
    assert error_R < 0.05 and error_t < 0.05 and inliers.mean() > 0.95
    # Pass 2 end to end from h5 caches written in the hloc layout.
    line = " ".join(["a.png", "b.png", "0", "0"] + [f"{v:.10g}" for v in np.concatenate([K.ravel(), K.ravel(),
                                                                                          T.ravel()])])
    (tmp_path / "pairs.txt").write_text(line + "\n")
    pairs = io.read_pairs(tmp_path / "pairs.txt")
    with h5py.File(tmp_path / "f.h5", "w") as h5:
        io.write_features(h5, "a.png", x0, np.ones(len(x0)), np.eye(len(x0)), (640, 480))
        io.write_features(h5, "b.png", x1, np.ones(len(x1)), np.eye(len(x1)), (640, 480))
    with h5py.File(tmp_path / "m.h5", "w") as h5:
        io.write_matches(h5, "a.png", "b.png", np.arange(len(x0)), np.ones(len(x0)))
    summary, records = pose.pose_pass2(pairs, [("a.png", "b.png")], tmp_path / "f.h5", tmp_path / "m.h5",
                                       pose.PoseProtocol())
    assert summary["num_pairs"] == 1 and summary["failures"] == 0
    assert all(v > 0.99 for v in summary["auc"].values()), summary
    # A wrong ground truth (rotation about another axis) is scored as an error.
    T_wrong = T.copy()
    T_wrong[:3, :3] = T[:3, :3].T
    assert metrics.pose_errors(R, t, T_wrong)[0] > 15


def test_fpr_at_recall_hand_computed():
    # 20 matching distances 0.1 .. 2.0: the 95% quantile interpolates between 1.9 and 2.0 at 18.05 -> 1.905.
    positive = np.arange(1, 21) * 0.1
    negative = [0.5, 1.9, 1.91, 3.0]  # 0.5 and 1.9 are accepted, 1.91 is just above the threshold
    assert metrics.fpr_at_recall(positive, negative) == pytest.approx(0.5)
    assert metrics.fpr_at_recall(positive, negative, recall=0.5) == pytest.approx(0.25)  # threshold 1.05
    assert metrics.fpr_at_recall([1.0], [1.0, 1.5]) == 0.5  # a tie is accepted
    with pytest.raises(ValueError, match="non-matching"):
        metrics.fpr_at_recall(positive, [])


def test_fpr_at_95_recall_pairs_rows_and_never_a_row_with_itself():
    d = np.eye(2, dtype=np.float32)
    assert metrics.fpr_at_95_recall(d, d) == 0.0  # matches at distance 0, non-matches at sqrt(2)
    assert metrics.fpr_at_95_recall(d, d[::-1]) == 1.0  # matching rows are the far ones
    # Identical descriptors: every matching pair is at 0, so any non-matching pair drawn as (i, i) would count.
    x = np.random.default_rng(3).normal(size=(50, 8))
    assert metrics.fpr_at_95_recall(x, x, np.random.default_rng(7)) == 0.0
    # 100 rows of 4 distinct values: a non-matching pair is at distance 0 (accepted) with probability 24/99.
    y = np.repeat(np.eye(4), 25, axis=0)
    assert 0.1 < metrics.fpr_at_95_recall(y, y) < 0.4
    with pytest.raises(ValueError, match="same shape"):
        metrics.fpr_at_95_recall(x, x[:10])
