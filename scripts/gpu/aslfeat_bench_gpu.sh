#!/bin/sh
# GPU box, after setup_device.sh: a larger synthetic GL3D set, its match sets, then the measured figures of
# docs/benchmarks.md (tf.data on all cores; ASLFeat train/infer on one GPU; DataParallel on two). Results: $OUT.
set -u
export PYTHONPATH="$HOME/site:$PWD" KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
G=${GL3D:-$HOME/gl3d}
R=$OUT/bench.jsonl
python3 -m data_tools.make_synthetic_gl3d --out "$G" --scenes 16 --images_per_scene 8 --workers 16 --seed 1 2>&1 | tail -1
python3 -m data_tools.gl3d_match_sets --gl3d "$G" --split gl3d --workers 16 --noprogress 2>&1 | tail -1
python3 -m data_tools.gl3d_benchmark --gl3d "$G" --batch_size 32 --batches 60 --warmup 10 2>&1 | grep '^{' | tee -a "$R"
B="--gin_bindings GL3D_ROOT='$G'"
for recipe in base dcn; do
  CUDA_VISIBLE_DEVICES=0 python3 -m tfmatch.benchmark --gin_file configs/methods/aslfeat/$recipe.gin $B --mode train --batch 2 --steps 200 --warmup 5 2>&1 | grep '^{' | tee -a "$R"
  CUDA_VISIBLE_DEVICES=0 python3 -m tfmatch.benchmark --gin_file configs/methods/aslfeat/$recipe.gin $B --mode train --batch 2 --steps 200 --warmup 5 --synthetic_data 2>&1 | grep '^{' | tee -a "$R"
  CUDA_VISIBLE_DEVICES=0 python3 -m tfmatch.benchmark --gin_file configs/methods/aslfeat/$recipe.gin $B --mode infer --batch 16 --height 480 --width 640 --steps 30 2>&1 | grep '^{' | tee -a "$R"
done
# DataParallel over both GPUs (global batch 4 = 2 per GPU), real pipeline
python3 -m tfmatch.benchmark --gin_file configs/methods/aslfeat/base.gin $B --mode train --batch 4 --steps 200 --warmup 5 2>&1 | grep '^{' | tee -a "$R"
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt"
