"""Corner-detection metrics on synthetic shapes: they live in ``tfmatch/eval/detection.py`` (evaluation code never
imports method code); re-exported here for the MagicPoint tests and scripts."""

from tfmatch.eval.detection import detection_pr, keypoint_map_to_points  # noqa: F401
