#!/bin/sh
# Trains GeoDesc on GL3D patch pairs (TFMatch recipe: configs/methods/geodesc/geodesc.gin).
#   GL3D_ROOT=/path/to/GL3D sh scripts/train_geodesc.sh [--model_dir ckpt/geodesc] [--gin_file configs/mixins/tiny.gin] ...
# Without GL3D_ROOT a synthetic GL3D set is built once under data_cache/synthetic_gl3d. Extra arguments go to
# python -m tfmatch.train; rerunning the same command resumes.
set -eu
cd "$(dirname "$0")/.."
. scripts/_venv.sh
. scripts/_gl3d.sh
ensure_venv .
ensure_gl3d
exec "$VENV/bin/python" -m tfmatch.train --gin_file configs/methods/geodesc/geodesc.gin \
    --gin_bindings "GL3D_ROOT = '$GL3D_ROOT'" --gin_bindings "GL3D_SPLIT = '$SPLIT'" \
    --model_dir "${MODEL_DIR:-ckpt/geodesc}" "$@"
