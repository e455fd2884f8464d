#!/bin/sh
# Trains SuperPoint (detector + descriptor) on a folder of images with Homographic Adaptation labels, starting
# from a MagicPoint model_dir (recipe: configs/methods/superpoint/superpoint.gin).
#   IMAGE_DIR=/path/to/coco/train2014 LABEL_DIR=/path/to/labels sh scripts/train_superpoint.sh [gin args...]
# MAGICPOINT_DIR (default ckpt/magicpoint) is the starting point; the model goes to ${MODEL_DIR:-ckpt/superpoint}.
# Make the labels first (scripts/superpoint_pipeline.sh does all three stages). Rerunning resumes.
set -eu
cd "$(dirname "$0")/.."
. scripts/_venv.sh
ensure_venv .
: "${IMAGE_DIR:?set IMAGE_DIR to the folder of training images}"
: "${LABEL_DIR:?set LABEL_DIR to the labels of data_tools.superpoint_export_labels}"
MAGICPOINT_DIR=${MAGICPOINT_DIR:-ckpt/magicpoint}
if [ ! -d "$MAGICPOINT_DIR/checkpoints" ]; then
    echo "[superpoint] no MagicPoint checkpoint in $MAGICPOINT_DIR: run scripts/train_magicpoint.sh first" >&2
    exit 1
fi
if [ ! -f "$LABEL_DIR/.complete" ]; then
    echo "[superpoint] $LABEL_DIR has no .complete marker: run data_tools.superpoint_export_labels first" >&2
    exit 1
fi
exec "$VENV/bin/python" -m tfmatch.train --gin_file configs/methods/superpoint/superpoint.gin \
    --gin_bindings "IMAGE_DIR = '$IMAGE_DIR'" --gin_bindings "LABEL_DIR = '$LABEL_DIR'" \
    --gin_bindings "MAGICPOINT_DIR = '$MAGICPOINT_DIR'" \
    --model_dir "${MODEL_DIR:-ckpt/superpoint}" "$@"
