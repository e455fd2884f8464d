#!/bin/sh
# The whole SuperPoint recipe on a folder of images, each stage resumable and runnable alone:
#   1. MagicPoint on Synthetic Shapes        (scripts/train_magicpoint.sh       -> $MAGICPOINT_DIR)
#   2. labels by Homographic Adaptation      (data_tools.superpoint_export_labels -> $LABEL_DIR)
#   3. SuperPoint on the images and labels   (scripts/train_superpoint.sh       -> $MODEL_DIR)
#   sh scripts/superpoint_pipeline.sh IMAGES_DIR [gin args for both trainings, e.g. --gin_file configs/mixins/tiny.gin]
# Environment: MAGICPOINT_DIR (ckpt/magicpoint), LABEL_DIR (data_cache/superpoint_labels), MODEL_DIR
# (ckpt/superpoint), NUM_HOMOGRAPHIES (100), LABEL_HEIGHT x LABEL_WIDTH (240 x 320: SuperPoint's IMAGE_SIZE).
set -eu
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: sh scripts/superpoint_pipeline.sh IMAGES_DIR [gin args...]" >&2; exit 2; }
IMAGE_DIR=$1
shift
[ -d "$IMAGE_DIR" ] || { echo "[superpoint] $IMAGE_DIR is not a directory" >&2; exit 2; }
. scripts/_venv.sh
ensure_venv .
export MAGICPOINT_DIR=${MAGICPOINT_DIR:-ckpt/magicpoint}
export LABEL_DIR=${LABEL_DIR:-data_cache/superpoint_labels}
export IMAGE_DIR
MODEL_DIR=$MAGICPOINT_DIR sh scripts/train_magicpoint.sh "$@"
"$VENV/bin/python" -m data_tools.superpoint_export_labels --model_dir "$MAGICPOINT_DIR" --images "$IMAGE_DIR" \
    --out "$LABEL_DIR" --num_homographies "${NUM_HOMOGRAPHIES:-100}" \
    --height "${LABEL_HEIGHT:-240}" --width "${LABEL_WIDTH:-320}"
MODEL_DIR=${MODEL_DIR:-ckpt/superpoint} exec sh scripts/train_superpoint.sh "$@"
