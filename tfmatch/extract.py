"""Extract local features of a set of images into an h5 file (hloc layout, see ``tfmatch/eval/io.py``).

    python -m tfmatch.extract (--saved_model S | --method sift|orb) --images DIR_OR_LIST --out F.h5 \
        [--max_keypoints N] [--resize L | --resize W,H] [--overwrite]

Resumable: images already in F.h5 are skipped. F.h5 made with another configuration is refused unless
``--overwrite`` is given.
"""

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("saved_model", None, "SavedModel directory (or a model_dir with export/).")
flags.DEFINE_enum("method", None, ["sift", "orb"], "OpenCV baseline instead of a SavedModel.")
flags.DEFINE_string("images", None, "Image directory (searched recursively) or a text file of relative paths.")
flags.DEFINE_string("out", None, "Output h5 file.")
flags.DEFINE_integer("max_keypoints", 4000, "Keypoint budget per image (0 = all a SavedModel returns).")
flags.DEFINE_list("resize", [], "Empty: original size; L: longer side L; W,H: exact size. Keypoints are "
                  "stored in original-image pixels.")
flags.DEFINE_boolean("overwrite", False, "Replace an output made with another configuration.")
flags.DEFINE_boolean("progress", True, "Show a progress bar.")
flags.DEFINE_enum("describe_keypoints", "model", ["model", "opencv"], "describe SavedModels (GeoDesc, ContextDesc): "
                  "SIFT as metadata.json says (the originals), or the keypoints of --method sift (descriptors alone).")
flags.mark_flags_as_required(["images", "out"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from tfmatch.eval import io, pipeline
    from tfmatch.eval.extractors import make_extractor

    extractor = make_extractor(FLAGS.saved_model, FLAGS.method, FLAGS.max_keypoints, io.parse_resize(FLAGS.resize),
                               FLAGS.describe_keypoints)
    root, names = io.list_images(FLAGS.images)
    computed = pipeline.extract_features(extractor, root, [(n, n, 0) for n in names], FLAGS.out, FLAGS.overwrite,
                                         FLAGS.progress)
    print(f"{FLAGS.out}: {computed} images extracted, {len(names) - computed} already there")


if __name__ == "__main__":
    app.run(main)
