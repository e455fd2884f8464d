#!/bin/sh
# The main job on an embedded default, from a fresh clone, on a CPU (about 10-15 minutes on 2 cores):
#   synthetic GL3D set -> match sets -> ASLFeat stage 1 (a few hundred steps, CPU-sized) -> SavedModel export
#   -> evaluation on an HPatches-format set made from real photographs, next to OpenCV SIFT -> table + plot.
#   sh scripts/quickstart.sh            (outputs under runs/quickstart; rerunning resumes / reuses)
# With a real data set and a GPU, use the training scripts instead (README, "Recipes and scripts").
set -eu
cd "$(dirname "$0")/.."
. scripts/_venv.sh
ensure_venv "."
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
OUT=${QUICKSTART_DIR:-runs/quickstart}
PY="$VENV/bin/python"
mkdir -p "$OUT"

echo "== 1/4 ASLFeat stage 1 on a synthetic GL3D set (configs/mixins/quickstart.gin shrinks the recipe for a CPU)"
MODEL_DIR="$OUT/aslfeat-base" sh scripts/train_aslfeat_base.sh --gin_file configs/mixins/quickstart.gin

echo "== 2/4 export the SavedModel"
"$PY" -m tfmatch.export --model_dir "$OUT/aslfeat-base"

echo "== 3/4 an HPatches-format set from the photographs scikit-image ships"
"$PY" -m data_tools.make_hpatches_demo --out "$OUT/hpatches-demo"

echo "== 4/4 evaluation next to OpenCV SIFT (same protocol: 1000 keypoints, mutual nearest neighbour)"
for method in sift; do
    "$PY" -m tfmatch.evaluate hpatches --data "$OUT/hpatches-demo" --method "$method" --max_keypoints 1000 \
        --out "$OUT/eval" --overwrite --noprogress
done
"$PY" -m tfmatch.evaluate hpatches --data "$OUT/hpatches-demo" --saved_model "$OUT/aslfeat-base/export" \
    --name aslfeat-quickstart --max_keypoints 1000 --out "$OUT/eval" --overwrite --noprogress
"$PY" - "$OUT/eval" <<'PYEOF'
import json, os, sys
out = sys.argv[1]
rows = []
for name in sorted(os.listdir(out)):
    path = os.path.join(out, name, "summary.json")
    if os.path.isfile(path):
        s = json.load(open(path))
        rows.append((name, s["mma"]["1"], s["mma"]["3"], s["mma"]["5"], s["homography_accuracy"]["3"],
                     s["num_keypoints"], s["num_matches"]))
print(f"\n{'method':<22}{'MMA@1':>8}{'MMA@3':>8}{'MMA@5':>8}{'H-acc@3':>9}{'kpts':>8}{'matches':>9}")
for r in rows:
    print(f"{r[0]:<22}{r[1]:>8.3f}{r[2]:>8.3f}{r[3]:>8.3f}{r[4]:>9.3f}{r[5]:>8.0f}{r[6]:>9.0f}")
print(f"\nplot: {os.path.join(out, 'mma.png')}")
PYEOF
