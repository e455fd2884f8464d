#!/bin/sh
# Trains ASLFeat stage 2 (deformable conv6*) from stage 1 (recipe: configs/methods/aslfeat/dcn.gin).
#   GL3D_ROOT=/path/to/GL3D sh scripts/train_aslfeat_dcn.sh [--gin_file configs/mixins/tiny.gin] ...
# Stage 1's model_dir is ${BASE_MODEL_DIR:-ckpt/aslfeat-base} (run scripts/train_aslfeat_base.sh first); the model
# goes to ${MODEL_DIR:-ckpt/aslfeat-dcn}. Without GL3D_ROOT the synthetic GL3D set of stage 1 is used (built once
# under data_cache/synthetic_gl3d). Extra arguments go to python -m tfmatch.train; rerunning resumes.
set -eu
cd "$(dirname "$0")/.."
. scripts/_venv.sh
. scripts/_gl3d.sh
ensure_venv .
BASE_MODEL_DIR=${BASE_MODEL_DIR:-ckpt/aslfeat-base}
if [ ! -d "$BASE_MODEL_DIR/checkpoints" ]; then
    echo "[aslfeat] no stage-1 checkpoint in $BASE_MODEL_DIR: run scripts/train_aslfeat_base.sh first" >&2
    exit 1
fi
ensure_gl3d
exec "$VENV/bin/python" -m tfmatch.train --gin_file configs/methods/aslfeat/dcn.gin \
    --gin_bindings "GL3D_ROOT = '$GL3D_ROOT'" --gin_bindings "gl3d_dense_dataset.data_split = '$SPLIT'" \
    --gin_bindings "BASE_MODEL_DIR = '$BASE_MODEL_DIR'" \
    --model_dir "${MODEL_DIR:-ckpt/aslfeat-dcn}" "$@"
