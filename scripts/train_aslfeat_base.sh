#!/bin/sh
# Trains ASLFeat stage 1 (plain convolutions) on GL3D dense pairs (recipe: configs/methods/aslfeat/base.gin).
#   GL3D_ROOT=/path/to/GL3D sh scripts/train_aslfeat_base.sh [--gin_file configs/mixins/tiny.gin] ...
# Without GL3D_ROOT a synthetic GL3D set is built once under data_cache/synthetic_gl3d and used instead.
# Match sets are built or reused (their .complete markers). The model goes to ${MODEL_DIR:-ckpt/aslfeat-base};
# extra arguments go to python -m tfmatch.train; rerunning the same command resumes.
set -eu
cd "$(dirname "$0")/.."
. scripts/_venv.sh
. scripts/_gl3d.sh
ensure_venv .
ensure_gl3d
exec "$VENV/bin/python" -m tfmatch.train --gin_file configs/methods/aslfeat/base.gin \
    --gin_bindings "GL3D_ROOT = '$GL3D_ROOT'" --gin_bindings "gl3d_dense_dataset.data_split = '$SPLIT'" \
    --model_dir "${MODEL_DIR:-ckpt/aslfeat-base}" "$@"
