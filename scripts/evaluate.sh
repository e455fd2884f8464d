#!/bin/sh
# Evaluate exported models and the OpenCV baselines on an HPatches-format set (default: the demo set built from
# scikit-image photographs), MMA curves of all of them in OUT/mma.png.
#   sh scripts/evaluate.sh [DATA [OUT [MODEL_DIR...]]]
# DATA: HPatches sequence layout (e.g. ../shared/data/hpatches-format); OUT: output directory (runs/eval);
# MODEL_DIR: model_dir of a trained method (its export/ is evaluated). Extra flags: EVAL_FLAGS="--overwrite".
set -eu
cd "$(dirname "$0")/.."
. scripts/_venv.sh
ensure_venv "."
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
DATA=${1:-runs/hpatches-demo}
OUT=${2:-runs/eval/$(basename "$DATA")}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] && shift
if [ ! -f "$DATA/.complete" ] && [ "$DATA" = runs/hpatches-demo ]; then
    "$VENV/bin/python" -m data_tools.make_hpatches_demo --out "$DATA"
fi
for method in sift orb; do
    "$VENV/bin/python" -m tfmatch.evaluate hpatches --data "$DATA" --method "$method" --out "$OUT" ${EVAL_FLAGS:-}
done
for model_dir in "$@"; do
    "$VENV/bin/python" -m tfmatch.evaluate hpatches --data "$DATA" --saved_model "$model_dir" \
        --name "$(basename "$model_dir")" --out "$OUT" ${EVAL_FLAGS:-}
done
echo "summaries: $OUT/*/summary.json; curves: $OUT/mma.png"
