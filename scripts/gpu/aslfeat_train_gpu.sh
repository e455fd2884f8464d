#!/bin/sh
# GPU box: train ASLFeat stage STAGE (base|dcn) for SECONDS on one GPU with the paper recipe at 480 px on the
# synthetic GL3D set of aslfeat_bench_gpu.sh. The run is stopped by `timeout`; its last checkpoint (every 500
# steps) stays, as a killed run would leave it. The model_dir comes back in $OUT for export and evaluation.
set -u
STAGE=${STAGE:-base}
SECONDS_BUDGET=${SECONDS_BUDGET:-420}
export PYTHONPATH="$HOME/site:$PWD" KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES=0
G=${GL3D:-$HOME/gl3d}
timeout "$SECONDS_BUDGET" python3 -m tfmatch.train --gin_file configs/methods/aslfeat/$STAGE.gin \
    --gin_bindings "GL3D_ROOT = '$G'" --gin_bindings "BASE_MODEL_DIR = '$HOME/aslfeat-base'" \
    --gin_bindings "train.steps_per_epoch = 500" --gin_bindings "train.log_every = 250" \
    --model_dir "$HOME/aslfeat-$STAGE" > "$OUT/train_$STAGE.log" 2>&1
grep -v "^W0000\|^I0000" "$OUT/train_$STAGE.log" | tail -25
D=$OUT/aslfeat-$STAGE; mkdir -p "$D"
cp "$HOME/aslfeat-$STAGE/operative_config.gin" "$D/"
cp "$(ls "$HOME/aslfeat-$STAGE/checkpoints/"*.h5 | tail -1)" "$D/"
cp "$HOME"/aslfeat-$STAGE/train/events.* "$D/" 2>/dev/null
ls -la "$D"
