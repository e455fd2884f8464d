#!/bin/sh
# Trains ContextDesc++ (TFMatch recipe: configs/methods/contextdesc/contextdesc.gin): match sets, then regional
# features (ResNet-50; REGIONAL_WEIGHTS=W.h5 for the retrieval weights, else local ImageNet or random with a
# warning), then training.
#   GL3D_ROOT=/path/to/GL3D REGIONAL_WEIGHTS=/path/to/trunk.weights.h5 sh scripts/train_contextdesc.sh [tfmatch.train args]
set -eu
cd "$(dirname "$0")/.."
. scripts/_venv.sh
. scripts/_gl3d.sh
ensure_venv .
ensure_gl3d
if [ -n "${REGIONAL_WEIGHTS:-}" ]; then
    "$VENV/bin/python" -m data_tools.extract_regional_features --gl3d "$GL3D_ROOT" --split "$SPLIT" --weights "$REGIONAL_WEIGHTS"
    WEIGHTS_BINDING="REGIONAL_WEIGHTS = '$REGIONAL_WEIGHTS'"
else
    "$VENV/bin/python" -m data_tools.extract_regional_features --gl3d "$GL3D_ROOT" --split "$SPLIT"
    WEIGHTS_BINDING="REGIONAL_WEIGHTS = None"
fi
exec "$VENV/bin/python" -m tfmatch.train --gin_file configs/methods/contextdesc/contextdesc.gin \
    --gin_bindings "GL3D_ROOT = '$GL3D_ROOT'" --gin_bindings "GL3D_SPLIT = '$SPLIT'" \
    --gin_bindings "$WEIGHTS_BINDING" --model_dir "${MODEL_DIR:-ckpt/contextdesc}" "$@"
