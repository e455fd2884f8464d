#!/bin/sh
# Trains MagicPoint on Synthetic Shapes drawn on the fly (recipe: configs/methods/superpoint/magicpoint.gin).
#   sh scripts/train_magicpoint.sh [--gin_file configs/mixins/tiny.gin] [--gin_bindings ...]
# The model goes to ${MODEL_DIR:-ckpt/magicpoint}; extra arguments go to python -m tfmatch.train; rerunning resumes.
# A fixed set instead: python -m data_tools.synthetic_shapes --out DIR, then
#   --gin_bindings "synthetic_shapes_dataset.data_dir = 'DIR'".
set -eu
cd "$(dirname "$0")/.."
. scripts/_venv.sh
ensure_venv .
exec "$VENV/bin/python" -m tfmatch.train --gin_file configs/methods/superpoint/magicpoint.gin \
    --model_dir "${MODEL_DIR:-ckpt/magicpoint}" "$@"
