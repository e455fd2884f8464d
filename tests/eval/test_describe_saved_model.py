"""A ``describe`` SavedModel end to end: a tiny untrained GeoDesc saved as a model_dir (operative config +
checkpoint, as the trainer leaves it), ``python -m tfmatch.export``, then ``python -m tfmatch.evaluate hpatches``
on a small HPatches-format set, next to SIFT on the same keypoints."""

import json

import h5py
import numpy as np

from tests.runtime._cli import run_cli
from tfmatch.eval import hpatches, io

BUDGET = 300  # SIFT keypoints per image


def _geodesc_model_dir(model_dir):
    """A GeoDesc run directory as ``tfmatch.train`` leaves it: ``operative_config.gin`` and a checkpoint."""
    from tfmatch import config
    from tfmatch.methods.geodesc import GeoDesc
    from tfmatch.runtime import checkpoints

    model = GeoDesc(width=0.25, max_keypoints=BUDGET)
    model.build_for_inference()
    model_dir.mkdir(parents=True)
    (model_dir / config.OPERATIVE_CONFIG).write_text(
        "import tfmatch.methods\n\n"
        "train.model_fn = @GeoDesc\n"
        "GeoDesc.width = 0.25\n"
        f"GeoDesc.max_keypoints = {BUDGET}\n")
    checkpoints.save(str(model_dir), model, step=7)
    return model


def test_geodesc_saved_model_through_export_and_evaluate_clis(tmp_path, subprocess_env, repo_root):
    from data_tools.make_hpatches_demo import make_demo
    from tfmatch.eval.extractors import make_extractor, opencv_keypoints

    model_dir = tmp_path / "geodesc"
    model = _geodesc_model_dir(model_dir)
    run_cli("tfmatch.export", ["--model_dir", str(model_dir), "--jit_compile", "false"], subprocess_env, repo_root)
    metadata = json.loads((model_dir / "export" / "metadata.json").read_text())
    assert metadata["endpoint"] == "describe" and metadata["checkpoint_step"] == 7
    assert metadata["detector"]["name"] == "sift" and metadata["detector"]["max_keypoints"] == BUDGET

    data = make_demo(tmp_path / "demo", seed=0, num_sequences=2, size=160)
    out = tmp_path / "eval"
    run_cli("tfmatch.evaluate", ["hpatches", "--data", str(data), "--saved_model", str(model_dir), "--out", str(out),
                                 "--max_keypoints", str(BUDGET), "--num_match_images", "1", "--noprogress",
                                 "--describe_keypoints", "opencv"],  # SIFT's keypoints: compare descriptors alone
            subprocess_env, repo_root)

    summary = json.loads((out / "summary.json").read_text())
    assert tuple(summary) == hpatches.SUMMARY_KEYS  # the documented keys, in order, nothing else
    assert json.loads((out / "geodesc" / "summary.json").read_text()) == summary
    thresholds = [str(t) for t in range(1, 11)]
    for key in ("mma", "mma_i", "mma_v"):  # the demo has both kinds of sequence
        assert list(summary[key]) == thresholds
        curve = [summary[key][t] for t in thresholds]
        assert all(0.0 <= v <= 1.0 for v in curve) and all(b >= a for a, b in zip(curve, curve[1:]))
    # Even untrained, the tower separates the demo's patches well (the set is easy); a mix-up of keypoints
    # and descriptors (wrong rows, wrong scale or orientation) would not.
    assert summary["mma"]["10"] > 0.5
    accuracy = summary["homography_accuracy"]
    assert list(accuracy) == ["1", "3", "5"] and 0.0 <= accuracy["1"] <= accuracy["3"] <= accuracy["5"] <= 1.0
    assert accuracy["5"] > 0.5
    assert 0.0 < summary["repeatability"] <= 1.0 and 0.0 <= summary["localization_error"] <= 3.0
    assert 0.0 < summary["nn_map"] <= 1.0 and 0.0 < summary["matching_score"] <= 1.0
    assert 0 < summary["num_matches"] <= summary["num_keypoints"] <= BUDGET
    assert len(list((out / "geodesc" / "matches").glob("*.png"))) == 1

    # SIFT into the same OUT: the same keypoints, so only the descriptor differs; both curves in mma.png.
    sift = hpatches.evaluate_hpatches(data, make_extractor(method="sift", max_keypoints=BUDGET), out,
                                      hpatches.HPatchesProtocol(max_keypoints=BUDGET), progress=False,
                                      num_match_images=0)
    assert sift["num_keypoints"] == summary["num_keypoints"]
    assert sorted(hpatches._comparable_summaries(out, json.loads((out / "protocol.json").read_text()))) == [
        "geodesc", "sift"]
    assert (out / "mma.png").stat().st_size > 0

    # The cached descriptors are the Keras model's, on the SIFT keypoints (x, y, size, angle) of each image.
    with h5py.File(out / "geodesc" / "features.h5", "r") as learned, h5py.File(out / "sift" / "features.h5",
                                                                                  "r") as baseline:
        sequence = next(s for s in io.read_hpatches(data) if s.kind == "v")
        name = f"{sequence.name}/{sequence.images[2].name}"
        features = io.read_features(learned, name)
        np.testing.assert_array_equal(features["keypoints"], io.read_features(baseline, name)["keypoints"])
        image = io.read_image(sequence.images[2], channels=1)
        keypoints, _, _ = opencv_keypoints("sift", image[:, :, 0], BUDGET)
        np.testing.assert_allclose(features["keypoints"], keypoints[:, :2])
        expected = np.asarray(model.describe(image[None].astype(np.float32), keypoints[None])["descriptors"])[0]
        assert features["descriptors"].shape == (len(keypoints), 128)
        np.testing.assert_allclose(features["descriptors"], expected, atol=2e-5)

