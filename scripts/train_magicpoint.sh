#!/bin/sh
# Trains MagicPoint on Synthetic Shapes drawn on the fly (recipe: configs/methods/superpoint/magicpoint.gin).
#   sh scripts/train_magicpoint.sh [--gin_file configs/mixins/tiny.gin] [--gin_bindings ...]
# The model goes to ${MODEL_DIR:-ckpt/magicpoint}; extra arguments go to python -m tfmatch.train; rerunning resumes.
# A fixed set instead: python -m data_tools.synthetic_shapes --out DIR [--workers 16], then
#   --gin_bindings "synthetic_shapes_dataset.data_dir = 'DIR'".
# On a GPU add --gin_bindings "synthetic_shapes_dataset.processes = 16": samples made in 16 processes (the GIL
# holds tf.data's numpy/OpenCV work to about 500 images/s; the GPU trains on several thousand).
# Then: python -m tfmatch.export --model_dir ckpt/magicpoint && python -m tfmatch.evaluate shapes \
#   --saved_model ckpt/magicpoint --out runs/eval-shapes   (and --method fast|harris|shi_tomasi).
set -eu
cd "$(dirname "$0")/.."
. scripts/_venv.sh
ensure_venv .
exec "$VENV/bin/python" -m tfmatch.train --gin_file configs/methods/superpoint/magicpoint.gin \
    --model_dir "${MODEL_DIR:-ckpt/magicpoint}" "$@"
