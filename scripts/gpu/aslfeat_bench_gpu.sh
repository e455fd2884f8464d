#!/bin/sh
# ASLFeat speed on one GPU (JAX), end to end through the user-facing commands (issue 4, item 8). On the GPU box
# after setup_device.sh; every result line is appended to $OUT/bench.jsonl as soon as it exists.
#   OUT=/tmp/out sh scripts/gpu/aslfeat_bench_gpu.sh train   # tfmatch.benchmark --mode train, then tfmatch.train
#   OUT=/tmp/out sh scripts/gpu/aslfeat_bench_gpu.sh infer   # tfmatch.benchmark --mode infer at 480x640, batch 16
#   OUT=/tmp/out BATCH=8 sh scripts/gpu/aslfeat_bench_gpu.sh batch  # base stage at batch 8: benchmark and trainer
#   OUT=/tmp/out TRAIN_SECONDS=120 sh scripts/gpu/aslfeat_bench_gpu.sh trainers  # base stage, recipe batch 2:
#       tfmatch.benchmark and tfmatch.train, bfloat16 then float32
#   OUT=/tmp/out DTYPE=bfloat16 TRAIN_SECONDS=110 sh scripts/gpu/aslfeat_bench_gpu.sh trainer  # tfmatch.train alone
# Both stages (base.gin, dcn.gin), float32 (the recipe) and ASLFeat.compute_dtype='bfloat16'. The synthetic GL3D
# set (16 scenes x 8 images) is built once in $GL3D (default $HOME/gl3d).
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$HOME/site:$PWD" KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false
G=${GL3D:-$HOME/gl3d}
R=$OUT/bench.jsonl
if [ ! -f "$G/.synthetic_gl3d.complete" ]; then
    python3 -m data_tools.make_synthetic_gl3d --out "$G" --scenes 16 --images_per_scene 8 --workers 16 --seed 1 2>&1 | tail -1
fi
python3 -m data_tools.gl3d_match_sets --gl3d "$G" --split gl3d --workers 16 --noprogress 2>&1 | tail -1

bench() {  # recipe dtype args...
    recipe=$1 dtype=$2
    shift 2
    echo "== $recipe $dtype $*"
    timeout "${BENCH_SECONDS:-110}" python3 -m tfmatch.benchmark --gin_file "configs/methods/aslfeat/$recipe.gin" \
        --gin_bindings "GL3D_ROOT = '$G'" --gin_bindings "ASLFeat.compute_dtype = '$dtype'" "$@" 2>&1 \
        | grep '^{' | sed "s/^{/{\"recipe\": \"$recipe\", \"compute_dtype\": \"$dtype\", /" | tee -a "$R"
}

trainer() {  # dtype batch: the trainer itself, base recipe, 480 px, steps_per_execution 10 (base.gin); steps/s
    # from its log, appended to $OUT/train_log.txt
    echo "== tfmatch.train base $1 batch $2" | tee -a "$OUT/train_log.txt"
    rm -rf "/tmp/aslfeat_train_speed_$1_$2"
    timeout -k 10 --signal=INT "${TRAIN_SECONDS:-110}" python3 -m tfmatch.train \
        --gin_file configs/methods/aslfeat/base.gin --gin_bindings "GL3D_ROOT = '$G'" \
        --gin_bindings "ASLFeat.compute_dtype = '$1'" --gin_bindings "train.batch_size = $2" \
        --gin_bindings "train.steps_per_epoch = 2000" --gin_bindings "train.log_every = 200" \
        --model_dir "/tmp/aslfeat_train_speed_$1_$2" 2>&1 | grep -E "^step |tfmatch\]|Error" | tee -a "$OUT/train_log.txt"
}

case "${1:-train}" in
train)
    for recipe in base dcn; do
        for dtype in float32 bfloat16; do
            bench $recipe $dtype --mode train --batch 2 --steps 300 --warmup 20
        done
    done
    trainer float32 2
    ;;
batch)  # larger batches than the recipe's 2 pairs: where the step stops being bound by small kernels
    for dtype in bfloat16 float32; do
        bench base $dtype --mode train --batch "${BATCH:-8}" --steps 100 --warmup 10
    done
    trainer bfloat16 2
    trainer bfloat16 "${BATCH:-8}"
    ;;
trainers)  # the base stage at the recipe's batch, both dtypes: benchmark, then the trainer's steady state
    for dtype in bfloat16 float32; do
        bench base $dtype --mode train --batch 2 --steps 300 --warmup 20
    done
    trainer bfloat16 2
    trainer float32 2
    ;;
trainer)
    trainer "${DTYPE:-bfloat16}" "${BATCH:-2}"
    ;;
infer)
    for recipe in base dcn; do
        for dtype in float32 bfloat16; do
            bench $recipe $dtype --mode infer --batch 16 --height 480 --width 640 --steps 30 --warmup 3
        done
    done
    ;;
esac
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1
