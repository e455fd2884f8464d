"""SIFT keypoints of patch-descriptor SavedModels: the detector settings and "by octave" budget of metadata.json."""

import cv2
import numpy as np
import pytest

from data_tools.photos import load_photo
from tfmatch.eval.extractors import sift_keypoints
from tfmatch.methods.geodesc.network import SIFT_SETTINGS


@pytest.fixture(scope="module")
def gray():
    return cv2.cvtColor(load_photo("astronaut", 320), cv2.COLOR_RGB2GRAY)


def _octaves(gray, settings):
    sift = cv2.SIFT_create(nfeatures=0, nOctaveLayers=settings["n_octave_layers"],
                           contrastThreshold=settings["contrast_threshold"],
                           edgeThreshold=settings["edge_threshold"], sigma=settings["sigma"])
    found = sift.detect(gray, None)
    return {(round(k.pt[0], 3), round(k.pt[1], 3), round(k.size, 3), round(k.angle, 3)):
            ((k.octave & 255) ^ 128) - 128 for k in found}


def test_by_octave_keeps_whole_octaves_largest_first(gray):
    octave_of = _octaves(gray, SIFT_SETTINGS)
    total = len(octave_of)
    # A budget one short of everything above the smallest octave: the smallest octave must be dropped whole.
    budget = sum(o > min(octave_of.values()) for o in octave_of.values()) - 1
    keypoints, scores = sift_keypoints(gray, SIFT_SETTINGS, budget)
    assert budget <= len(keypoints) < total and len(scores) == len(keypoints)
    kept = [octave_of[tuple(round(float(v), 3) for v in k)] for k in keypoints]
    lowest = min(kept)
    # Every keypoint of a kept octave is kept, and no keypoint of a smaller octave is.
    assert sorted(kept, reverse=True) == kept
    assert sum(o >= lowest for o in octave_of.values()) == len(keypoints)
    # Dropping the last (smallest) kept octave would fall short of the budget.
    assert sum(o > lowest for o in octave_of.values()) < budget


def test_strongest_and_upright(gray):
    settings = dict(SIFT_SETTINGS, selection="strongest")
    keypoints, scores = sift_keypoints(gray, settings, 100)
    assert len(keypoints) == 100 and np.all(np.diff(scores) <= 0)
    upright, _ = sift_keypoints(gray, dict(SIFT_SETTINGS, upright=True), 10 ** 6)
    assert np.all(upright[:, 3] == 0)
    assert len(np.unique(upright[:, :3], axis=0)) == len(upright)  # orientation duplicates removed
    with pytest.raises(ValueError, match="selection"):
        sift_keypoints(gray, dict(SIFT_SETTINGS, selection="random"), 10)


def test_contrast_threshold_is_applied(gray):
    low, _ = sift_keypoints(gray, dict(SIFT_SETTINGS, selection="strongest"), 10 ** 6)
    high, _ = sift_keypoints(gray, dict(SIFT_SETTINGS, selection="strongest", contrast_threshold=0.04), 10 ** 6)
    assert len(low) > len(high) > 0  # the originals' 0.0067 finds more than OpenCV's default 0.04
