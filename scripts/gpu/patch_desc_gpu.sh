#!/bin/sh
# GeoDesc and ContextDesc on one GPU with the JAX backend (issue 7, item 6):
#   1. a synthetic GL3D set (6 scenes x 8 images), its match sets and regional features;
#   2. trains each method of METHODS (default "GeoDesc ContextDesc", one after the other; METHODS="" only
#      prepares the data, so that two runs with one method each can then share the GPU) for TRAIN_SECONDS
#      (default 300) with the recipe's optimiser, and measures training patch pairs per second (after the
#      first, compiling, steps);
#   3. evaluates both next to SIFT on ../shared/data/hpatches-format: the SAME OpenCV SIFT keypoints
#      (4000 strongest) for all three, mutual nearest neighbours, share of matches within 1/3/5 px (MMA).
# Results: $OUT/patch_desc_gpu[_TAG].json and .md (paste into docs/benchmarks.md); TAG defaults to empty. The JSON
# is written after training and after each evaluated sequence, so a call's time limit keeps what was done. Trained
# weights go to WEIGHTS_DIR (default $GL3D/trained, on the machine): SKIP_EVAL=1 only trains, EVAL_ONLY=1 (with
# SKIP_PREP=1) evaluates those weights, so training and evaluation can be two device calls of 10 minutes each
# (on 2026-11-25 ContextDesc's evaluation did not fit after 300 s of training in one call).
#   OUT=/tmp/out HPATCHES=../shared/data/hpatches-format sh scripts/gpu/patch_desc_gpu.sh
set -eu
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/patch_desc_gpu}
HPATCHES=${HPATCHES:-../shared/data/hpatches-format}
TRAIN_SECONDS=${TRAIN_SECONDS:-300}
METHODS=${METHODS-GeoDesc ContextDesc}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=false
mkdir -p "$OUT"
GL3D=${GL3D_ROOT:-$OUT/synthetic_gl3d}
# ContextDesc's ResNet-50 trunk: the regional features for training and the model's describe() must come from the
# same weights. Without retrieval or local ImageNet weights (the GPU box has neither), a random trunk is drawn once
# and saved here, and both use that file; the visual context then carries random-projection features only.
REGIONAL_WEIGHTS=${REGIONAL_WEIGHTS:-$GL3D/regional_trunk.weights.h5}
if [ -z "${SKIP_PREP:-}" ]; then  # SKIP_PREP=1: an earlier METHODS="" run prepared the data
    if [ ! -f "$GL3D/.synthetic_gl3d.complete" ] && [ -z "${GL3D_ROOT:-}" ]; then
        "$PY" -m data_tools.make_synthetic_gl3d --out "$GL3D" --scenes 6 --images_per_scene 8 --workers 8
    fi
    "$PY" -m data_tools.gl3d_match_sets --gl3d "$GL3D" --split gl3d --workers 8 --noprogress
    if [ ! -f "$REGIONAL_WEIGHTS" ]; then  # one random trunk, saved, so that training and describe share it
        "$PY" -c "import sys; from tfmatch.methods.contextdesc.network import build_regional_trunk as b; \
b(None).save_weights(sys.argv[1])" "$REGIONAL_WEIGHTS"
    fi
    "$PY" -m data_tools.extract_regional_features --gl3d "$GL3D" --split gl3d --batch_size 16 \
        --weights "$REGIONAL_WEIGHTS"
fi
[ -n "$METHODS" ] || exit 0
export REGIONAL_WEIGHTS
exec "$PY" - "$GL3D" "$HPATCHES" "$OUT" "$TRAIN_SECONDS" "$METHODS" "${TAG:-}" <<'EOF'
import json, os, platform, sys, time

import tensorflow as tf
tf.config.set_visible_devices([], "GPU")  # tf.data on the CPU; the model on the GPU through JAX
import cv2
import jax
import keras
import numpy as np

from tfmatch.data.gl3d_patches import gl3d_patch_dataset
from tfmatch.eval.extractors import opencv_keypoints
from tfmatch.methods.contextdesc import ContextDesc
from tfmatch.methods.geodesc import GeoDesc

gl3d, hpatches, out, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
methods, tag = sys.argv[5].split(), (f"_{sys.argv[6]}" if sys.argv[6] else "")
ROWS, BATCH = 1024, 2
WARM_STEPS = int(os.environ.get("WARM_STEPS", "20"))  # steps left out of the rate (compilation, warm-up)


class TimeLimit(keras.callbacks.Callback):
    def __init__(self, seconds):
        super().__init__()
        self.seconds, self.steps, self.t_warm, self.steps_warm = seconds, 0, None, 0
        self.t_start = time.time()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps in (1, WARM_STEPS) or self.steps % 500 == 0:  # progress: where the time goes
            print(f"[{self.model.name}] step {self.steps} after {time.time() - self.t_start:.0f} s, "
                  f"loss {float(logs.get('loss', float('nan'))):.4f}", flush=True)
        if self.steps == WARM_STEPS:  # compile and warm-up done
            self.t_warm, self.steps_warm = time.time(), self.steps
        if self.t_warm and time.time() - self.t_warm > self.seconds:
            self.model.stop_training = True


def train(model, regional):
    ds = gl3d_patch_dataset("train", BATCH, gl3d_root=gl3d, data_split="gl3d", num_pairs=ROWS, regional=regional,
                            workers=12)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 200000, 0.1)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9))
    limit = TimeLimit(seconds)
    t0 = time.time()
    hist = model.fit(ds, steps_per_epoch=100000, epochs=1, verbose=0, callbacks=[limit])
    t1 = time.time()
    steps = limit.steps - limit.steps_warm
    return {"steps": limit.steps, "seconds": round(t1 - t0, 1),
            "pairs_per_s": round(steps * BATCH * ROWS / max(t1 - limit.t_warm, 1e-6), 1) if limit.t_warm else None,
            "final": {k: round(float(v[-1]), 4) for k, v in hist.history.items()}}


def mma(k0, d0, k1, d1, H, thresholds=(1, 3, 5)):
    if len(k0) == 0 or len(k1) == 0:
        return [0.0] * len(thresholds), 0
    sim = d0 @ d1.T
    nn01, nn10 = sim.argmax(1), sim.argmax(0)
    ids = np.where(nn10[nn01] == np.arange(len(k0)))[0]
    p = np.concatenate([k0[ids, :2], np.ones((len(ids), 1))], 1) @ H.T
    err = np.linalg.norm(p[:, :2] / p[:, 2:] - k1[nn01[ids], :2], axis=1)
    return [float(np.mean(err <= t)) if len(ids) else 0.0 for t in thresholds], int(len(ids))


def evaluate(models, report, save):
    results = report.setdefault("hpatches", {})
    for seq in sorted(os.listdir(hpatches)):
        folder = os.path.join(hpatches, seq)
        if not os.path.isdir(folder):
            continue
        print(f"[evaluate] {seq} ({', '.join(models)}) at {time.strftime('%H:%M:%S')}", flush=True)
        feats = []
        for i in range(1, 7):
            t = time.time()
            gray = cv2.imread(os.path.join(folder, f"{i}.png"), cv2.IMREAD_GRAYSCALE)
            kp, _, sift = opencv_keypoints("sift", gray, 4000)
            f = {"kp": kp, "SIFT": sift}
            for name, model in models.items():
                d = model.describe(gray[None, :, :, None].astype(np.float32), kp[None])["descriptors"]
                f[name] = np.asarray(d)[0]
            feats.append(f)
            print(f"[evaluate] {seq}/{i}: {gray.shape[1]}x{gray.shape[0]}, {len(kp)} keypoints, "
                  f"{time.time() - t:.1f} s", flush=True)
        for j in range(2, 7):
            H = np.loadtxt(os.path.join(folder, f"H_1_{j}"))
            for name in ["SIFT", *models]:
                scores, n = mma(feats[0]["kp"], feats[0][name], feats[j - 1]["kp"], feats[j - 1][name], H)
                results.setdefault(name, {}).setdefault(seq, []).append({"pair": f"1-{j}", "mma@1/3/5": scores,
                                                                        "matches": n})
        save()  # what is done so far survives a time limit
    return results


report = {"machine": f"{jax.devices()[0].device_kind}, {platform.node()}", "backend": keras.backend.backend(),
          "date": time.strftime("%Y-%m-%d"), "train_seconds_each": seconds, "gl3d": gl3d}
report_path = os.path.join(out, f"patch_desc_gpu{tag}.json")


def save():
    with open(report_path, "w") as f:
        json.dump(report, f, indent=1)


# ContextDesc: regional features from the trunk in REGIONAL_WEIGHTS (random unless real weights are given).
report["regional_weights"] = os.environ.get("REGIONAL_WEIGHTS")
models = {name: GeoDesc() if name == "GeoDesc" else ContextDesc(regional_weights=os.environ.get("REGIONAL_WEIGHTS"))
          for name in methods}
# Trained weights are kept in WEIGHTS_DIR (on the machine), so that EVAL_ONLY=1 can evaluate them in a later call.
weights_dir = os.environ.get("WEIGHTS_DIR") or os.path.join(gl3d, "trained")
os.makedirs(weights_dir, exist_ok=True)
for name, model in models.items():
    weights = os.path.join(weights_dir, f"{name}.weights.h5")
    if os.environ.get("EVAL_ONLY"):
        model.load_weights(weights)
        with open(weights[:-len(".weights.h5")] + "_train.json") as f:
            report[name.lower() + "_train"] = json.load(f)
        print(f"[{name}] evaluating {weights}", flush=True)
        continue
    report[name.lower() + "_train"] = train(model, regional=(name == "ContextDesc"))
    model.save_weights(weights)
    with open(weights[:-len(".weights.h5")] + "_train.json", "w") as f:
        json.dump(report[name.lower() + "_train"], f)
    save()
    print(f"[{name}] trained: {report[name.lower() + '_train']}; weights {weights} at {time.strftime('%H:%M:%S')}",
          flush=True)
if os.environ.get("SKIP_EVAL"):
    sys.exit(0)
evaluate(models, report, save)
lines = [f"machine: {report['machine']}; backend {report['backend']}; {report['date']}", "",
         "| method | train steps | patch pairs/s | " + " | ".join(
             f"{s} MMA@3 1-2..1-6" for s in sorted(report["hpatches"]["SIFT"])) + " |",
         "|---" * (3 + len(report["hpatches"]["SIFT"])) + "|"]
for name in ("SIFT", *models):
    tr = report.get(name.lower() + "_train", {})
    cells = [" ".join(f"{p['mma@1/3/5'][1]:.2f}" for p in report["hpatches"][name][s])
             for s in sorted(report["hpatches"][name])]
    lines.append(f"| {name} | {tr.get('steps', '-')} | {tr.get('pairs_per_s', '-')} | " + " | ".join(cells) + " |")
lines += ["", "| method | MMA @1 / @3 / @5 (mean of all pairs) | matches/pair |", "|---|---|---|"]
for name in ("SIFT", *models):
    pairs = [p for s in report["hpatches"][name].values() for p in s]
    mean = np.mean([p["mma@1/3/5"] for p in pairs], axis=0)
    lines.append(f"| {name} | {mean[0]:.3f} / {mean[1]:.3f} / {mean[2]:.3f} | "
                 f"{np.mean([p['matches'] for p in pairs]):.0f} |")
with open(os.path.join(out, f"patch_desc_gpu{tag}.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
