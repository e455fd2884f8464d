"""Evaluate an exported model or an OpenCV baseline on a standard benchmark layout.

    python -m tfmatch.evaluate hpatches --data ROOT (--saved_model S | --method sift|orb) --out OUT
    python -m tfmatch.evaluate pose --pairs PAIRS --images DIR (--saved_model S | --method sift|orb) --out OUT
    python -m tfmatch.evaluate shapes (--saved_model S | --method fast|harris|shi_tomasi) --out OUT

Two passes: features and matches are cached in ``OUT/<tag>/{features,matches}.h5``, then the metrics are computed
from the caches into ``OUT/summary.json`` (and ``OUT/<tag>/summary.json``). Rerunning with another configuration
into the same OUT is refused unless ``--overwrite``. Protocol constants are flags whose defaults are stated in
``tfmatch/eval/hpatches.py`` and ``tfmatch/eval/pose.py`` and written to ``OUT/protocol.json``. See
docs/evaluation.md.
"""

import json

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("saved_model", None, "SavedModel directory (or a model_dir with export/).")
flags.DEFINE_enum("method", None, ["sift", "orb", "fast", "harris", "shi_tomasi"],
                  "OpenCV baseline instead of a SavedModel (fast, harris, shi_tomasi: shapes only).")
flags.DEFINE_string("out", None, "Output directory (one protocol; several methods, one subdirectory each).")
flags.DEFINE_string("name", "", "Tag of the method in OUT (default: sift, orb or the SavedModel's method).")
flags.DEFINE_string("matcher", "mnn", "'mnn', 'ratio' or a matcher SavedModel directory.")
flags.DEFINE_float("ratio", 0.8, "Ratio of the ratio test.")
flags.DEFINE_integer("max_keypoints", None, "Keypoint budget (default: 4000 hpatches, 1024 pose).")
flags.DEFINE_list("resize", None, "Empty: original size; L: longer side; W,H: exact size "
                  "(default: original for hpatches, 640,480 for pose).")
flags.DEFINE_boolean("overwrite", False, "Replace results of another configuration in OUT.")
flags.DEFINE_integer("num_match_images", 5, "Pairs drawn as PNG (inliers green, outliers red).")
flags.DEFINE_boolean("progress", True, "Show progress bars.")
flags.DEFINE_enum("describe_keypoints", "model", ["model", "opencv"], "describe SavedModels (GeoDesc, ContextDesc): "
                  "SIFT as metadata.json says (the originals), or the keypoints of --method sift (descriptors alone).")
# hpatches
flags.DEFINE_string("data", None, "hpatches: root of <seq>/1..6.<ext>, H_1_k.")
flags.DEFINE_string("sequences", "", "hpatches: regular expression selecting sequences (default all).")
flags.DEFINE_enum("homography_estimator", "ransac", ["ransac", "magsac"], "hpatches: cv2.findHomography method.")
flags.DEFINE_float("homography_threshold", 3.0, "hpatches: RANSAC reprojection threshold [px].")
# pose
flags.DEFINE_string("pairs", None, "pose: SuperGlue pairs_with_gt file (38 fields a line).")
flags.DEFINE_string("images", None, "pose: directory of the images named in --pairs.")
flags.DEFINE_enum("pose_estimator", "magsac", ["magsac", "ransac"], "pose: cv2.findEssentialMat method.")
flags.DEFINE_float("ransac_threshold", 1.0, "pose: essential-matrix inlier threshold [px of the resized image].")
# shapes
flags.DEFINE_string("shapes_data", None, "shapes: a set written by data_tools.synthetic_shapes (default: drawn).")
flags.DEFINE_integer("max_images", None, "shapes: first N images of the test split (default: all).")


def _need(*names):
    missing = [f"--{n}" for n in names if getattr(FLAGS, n) is None]
    if missing:
        raise app.UsageError(f"missing {', '.join(missing)}")


def main(argv):
    if len(argv) != 2 or argv[1] not in ("hpatches", "pose", "shapes"):
        raise app.UsageError("usage: python -m tfmatch.evaluate (hpatches|pose|shapes) [flags]")
    from tfmatch.eval import io
    from tfmatch.eval.extractors import make_extractor

    _need("out")
    if (FLAGS.saved_model is None) == (FLAGS.method is None):
        raise app.UsageError("give exactly one of --saved_model and --method")
    if argv[1] == "shapes":
        print(json.dumps(_evaluate_shapes(make_extractor), indent=2))
        return
    if FLAGS.method not in (None, "sift", "orb"):
        raise app.UsageError(f"--method {FLAGS.method} has no descriptors: it is for the shapes protocol only")
    common = dict(name=FLAGS.name, matcher=FLAGS.matcher, ratio=FLAGS.ratio, overwrite=FLAGS.overwrite,
                  num_match_images=FLAGS.num_match_images, progress=FLAGS.progress)
    if argv[1] == "hpatches":
        from tfmatch.eval.hpatches import HPatchesProtocol, evaluate_hpatches

        _need("data")
        protocol = HPatchesProtocol(
            resize=io.parse_resize(FLAGS.resize) if FLAGS.resize is not None else (),
            max_keypoints=FLAGS.max_keypoints if FLAGS.max_keypoints is not None else 4000,
            homography_estimator=FLAGS.homography_estimator, homography_ransac_threshold=FLAGS.homography_threshold,
            sequences=FLAGS.sequences)
        io.read_hpatches(FLAGS.data, sequences=protocol.sequences)  # bad data fails before a model is loaded
        extractor = make_extractor(FLAGS.saved_model, FLAGS.method, protocol.max_keypoints, protocol.resize,
                               FLAGS.describe_keypoints)
        summary = evaluate_hpatches(FLAGS.data, extractor, FLAGS.out, protocol, **common)
    else:
        from tfmatch.eval.pose import PoseProtocol, evaluate_pose

        _need("pairs", "images")
        protocol = PoseProtocol(
            resize=io.parse_resize(FLAGS.resize) if FLAGS.resize is not None else (640, 480),
            max_keypoints=FLAGS.max_keypoints if FLAGS.max_keypoints is not None else 1024,
            ransac_threshold=FLAGS.ransac_threshold, estimator=FLAGS.pose_estimator)
        io.read_pairs(FLAGS.pairs, with_gt=True)
        extractor = make_extractor(FLAGS.saved_model, FLAGS.method, protocol.max_keypoints, protocol.resize,
                               FLAGS.describe_keypoints)
        summary = evaluate_pose(FLAGS.pairs, FLAGS.images, extractor, FLAGS.out, protocol, **common)
    print(json.dumps(summary, indent=2))


def _evaluate_shapes(make_extractor):
    from tfmatch.eval.shapes import ShapesProtocol, classical_corners, evaluate_shapes

    protocol = ShapesProtocol(data=FLAGS.shapes_data, max_images=FLAGS.max_images,
                              max_keypoints=FLAGS.max_keypoints if FLAGS.max_keypoints is not None else 300)
    if FLAGS.method is not None:
        if FLAGS.method in ("sift", "orb"):
            raise app.UsageError("shapes: --method must be fast, harris or shi_tomasi (or give --saved_model)")
        name = FLAGS.name or FLAGS.method

        def detect(image):
            return classical_corners(FLAGS.method, image, protocol.max_keypoints, protocol.nms_radius)
    else:
        extractor = make_extractor(FLAGS.saved_model, None, protocol.max_keypoints, ())
        name = FLAGS.name or extractor.name

        def detect(image):
            keypoints, scores, _ = extractor(image[:, :, None])
            return keypoints, scores
    return evaluate_shapes(detect, name, FLAGS.out, protocol, progress=FLAGS.progress)


if __name__ == "__main__":
    app.run(main)
