#!/bin/sh
# Trains GeoDesc on GL3D patch pairs (TFMatch recipe: configs/methods/geodesc/geodesc.gin).
#   GL3D_ROOT=/path/to/GL3D sh scripts/train_geodesc.sh [--model_dir ckpt/geodesc] [--gin_file configs/mixins/tiny.gin] ...
# Without GL3D_ROOT a synthetic GL3D set is built once under data_cache/synthetic_gl3d. Extra arguments go to
# python -m tfmatch.train; rerunning the same command resumes.
set -eu
cd "$(dirname "$0")/.."
. scripts/_venv.sh
ensure_venv .
SPLIT=${GL3D_SPLIT:-gl3d}
if [ -z "${GL3D_ROOT:-}" ]; then
    GL3D_ROOT=data_cache/synthetic_gl3d
    [ -f "$GL3D_ROOT/.synthetic_gl3d.complete" ] || "$VENV/bin/python" -m data_tools.make_synthetic_gl3d --out "$GL3D_ROOT"
fi
"$VENV/bin/python" -m data_tools.gl3d_match_sets --gl3d "$GL3D_ROOT" --split "$SPLIT"
exec "$VENV/bin/python" -m tfmatch.train --gin_file configs/methods/geodesc/geodesc.gin \
    --gin_bindings "GL3D_ROOT = '$GL3D_ROOT'" --gin_bindings "GL3D_SPLIT = '$SPLIT'" \
    --model_dir ckpt/geodesc "$@"
