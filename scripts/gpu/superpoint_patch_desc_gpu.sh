#!/bin/sh
# Issue 6 item 8 and issue 7 item 6 in one device call (under 10 minutes), three jobs sharing one GPU:
#   0. the GL3D input pipeline's throughput on all CPU cores, alone (issue 3, item 5);
#   1. GeoDesc and ContextDesc, PATCH_SECONDS each (default 300), concurrently (scripts/gpu/patch_desc_gpu.sh);
#   2. MagicPoint (MAGICPOINT_SECONDS, default 200), Homographic Adaptation on PHOTOS, joint SuperPoint training (scripts/gpu/superpoint_gpu.sh);
#      its inference speed is measured after the two patch jobs have finished, with the GPU to itself.
# Inputs prepared on the CPU machine and carried: DATA/gl3d (python -m data_tools.make_synthetic_gl3d --scenes 6
# --images_per_scene 8), DATA/photos (python -m data_tools.make_photo_folder --count 240), DATA/hpatches-format.
#   DATA=.devdata OUT=/tmp/out sh scripts/gpu/superpoint_patch_desc_gpu.sh
set -u
cd "$(dirname "$0")/../.."
DATA=${DATA:-.devdata}
OUT=${OUT:-/tmp/superpoint_patch_desc_gpu}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT"
export GL3D_ROOT="$DATA/gl3d" HPATCHES="$DATA/hpatches-format" PYTHON="$PY"
start=$(date +%s)
if [ -n "${GL3D_BENCH:-1}" ]; then
    "$PY" -m data_tools.gl3d_match_sets --gl3d "$GL3D_ROOT" --split gl3d --workers 8 --noprogress
    for threads in 1 0; do  # one core, then all of them (0: TensorFlow's default pool)
        "$PY" -m data_tools.gl3d_benchmark --gl3d "$GL3D_ROOT" --batch_size 32 --threads $threads \
            --batches "${GL3D_BATCHES:-60}" --warmup 10 2>&1 | tee -a "$OUT/gl3d_benchmark.txt" | grep '^{'
    done
fi
echo "[gpu] data benchmark done after $(( $(date +%s) - start )) s"
METHODS="" sh scripts/gpu/patch_desc_gpu.sh > "$OUT/patch_prep.log" 2>&1 || { tail -20 "$OUT/patch_prep.log"; exit 1; }
echo "[gpu] patch data ready after $(( $(date +%s) - start )) s"
for method in GeoDesc ContextDesc; do
    (SKIP_PREP=1 METHODS=$method TAG=$method TRAIN_SECONDS=${PATCH_SECONDS:-300} sh scripts/gpu/patch_desc_gpu.sh > "$OUT/$method.log" 2>&1;
     echo "exit $?" > "$OUT/$method.done") &
done
TRAIN_SECONDS=${MAGICPOINT_SECONDS:-200} WAIT_FOR="$OUT/GeoDesc.done,$OUT/ContextDesc.done" PHOTOS="$DATA/photos" WORK_DIR=/tmp/superpoint_work \
    sh scripts/gpu/superpoint_gpu.sh > "$OUT/superpoint.log" 2>&1
echo "[gpu] superpoint exit $? after $(( $(date +%s) - start )) s"
wait
echo "[gpu] all done after $(( $(date +%s) - start )) s"
for f in "$OUT"/*.done; do echo "$f: $(cat "$f")"; done
for f in "$OUT"/*.md; do cat "$f"; done
tail -5 "$OUT/superpoint.log" "$OUT/GeoDesc.log" "$OUT/ContextDesc.log"
# Logs travel in one archive (at most 8 files come back).
tar -czf "$OUT/logs.tgz" -C "$OUT" $(cd "$OUT" && ls *.log *.done gl3d_benchmark.txt 2>/dev/null) && \
    (cd "$OUT" && rm -f *.log *.done)
