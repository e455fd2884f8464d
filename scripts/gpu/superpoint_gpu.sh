#!/bin/sh
# SuperPoint / MagicPoint on one GPU with the JAX backend (issue 6, item 8), in stages (STAGES, default all, in
# this order; each stage a few minutes, so that one device call of at most 10 minutes can run some of them):
#   magicpoint  draws a pool of POOL augmented Synthetic Shapes (120x160, the spec's photometric + homographic
#               augmentation) and the held-out test split (no augmentation, TEST_LIMIT images at most) on all CPU
#               cores; trains MagicPoint on the pool for TRAIN_SECONDS (default 240; Adam 1e-3, batch 64,
#               rpautrat BN variant, dustbin prior 5), records steps per second; scores corner-detection mAP on
#               the held-out shapes (threshold 0.001, NMS 4, 2 px, the spec's compute_pr protocol,
#               tfmatch/methods/superpoint/evaluation.py) next to OpenCV FAST, Harris and Shi-Tomasi on the same
#               images; the model_dir is WORK_DIR/magicpoint (loadable: operative config + checkpoint);
#   speed       SuperPoint inference speed at 480x640, batch SPEED_BATCH (32), fp32: scripts/gpu/superpoint_speed.py
#               (extract and the network alone, variants, FLOP rate, kernel trace) into $OUT/superpoint_speed.json;
#               with WAIT_FOR=FILE[,FILE] it first waits (at most WAIT_LIMIT s) for those files, written by
#               other jobs on the same GPU when they end;
#   adapt       Homographic Adaptation labels (data_tools.superpoint_export_labels, NUM_HOMOGRAPHIES = 100 views)
#               for PHOTOS (a folder of real photographs, e.g. python -m data_tools.make_photo_folder) with
#               WORK_DIR/magicpoint, into WORK_DIR/labels;
#   joint       joint SuperPoint training on PHOTOS + labels from WORK_DIR/magicpoint with the user-facing
#               command (python -m tfmatch.train, configs/methods/superpoint/superpoint.gin) into
#               WORK_DIR/superpoint, stopped (SIGINT, SIGKILL 5 s later) after JOINT_SECONDS (default 100; 0 skips; with
#               JOINT_DEADLINE = epoch seconds, at most until then and at least JOINT_MIN seconds); a checkpoint
#               every JOINT_EPOCH (250) steps, so at most that many steps are lost at the stop; the pairs are made
#               in JOINT_PROCESSES (16) worker processes (image_folder_dataset.processes).
# At the end, the model_dirs under WORK_DIR (operative config + newest checkpoint each) are packed into
# $OUT/superpoint_models.tar (split into 15 MiB parts superpoint_models.tar.part* when larger: cat them).
# Results: $OUT/superpoint_gpu.json and .md (magicpoint), $OUT/superpoint_speed.json, $OUT/superpoint_chain.json (adapt, joint),
# $OUT/adapt.log, $OUT/joint_train.log. Examples (a GPU machine; WORK_DIR survives between calls while the machine is up):
#   OUT=/tmp/out WORK_DIR=/tmp/spw STAGES="magicpoint speed" sh scripts/gpu/superpoint_gpu.sh
#   OUT=/tmp/out WORK_DIR=/tmp/spw STAGES="adapt joint" PHOTOS=DIR JOINT_SECONDS=300 sh scripts/gpu/superpoint_gpu.sh
set -eu
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/superpoint_gpu}
WORK_DIR=${WORK_DIR:-$OUT/work}
STAGES=${STAGES:-magicpoint speed adapt joint}
TRAIN_SECONDS=${TRAIN_SECONDS:-240}
POOL=${POOL:-24000}
JOINT_SECONDS=${JOINT_SECONDS:-100}
JOINT_EPOCH=${JOINT_EPOCH:-250}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=false
mkdir -p "$OUT" "$WORK_DIR"
export WORK_DIR
has() { case " $STAGES " in *" $1 "*) return 0 ;; esac; return 1; }
stamp() { echo "[superpoint_gpu] $1 at $(date +%H:%M:%S)"; }
MAGICPOINT_DIR=$WORK_DIR/magicpoint LABELS=$WORK_DIR/labels SUPERPOINT_DIR=$WORK_DIR/superpoint
CHAIN=$WORK_DIR/chain.env  # key=value lines of the adapt and joint stages, summarised into superpoint_chain.json

if has adapt || has joint; then
    [ -n "${PHOTOS:-}" ] || { echo "superpoint_gpu.sh: stages adapt and joint need PHOTOS=DIR" >&2; exit 2; }
fi

if has magicpoint; then
    stamp "magicpoint start"
    "$PY" - "$OUT" "$TRAIN_SECONDS" "$POOL" <<'EOF'
import json, multiprocessing as mp, os, platform, sys, time

import numpy as np

out_dir, train_seconds, pool_size = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
work_dir = os.environ["WORK_DIR"]
SIZE, CANVAS = (120, 160), (480, 640)  # drawing at half the original canvas keeps the pool under a minute


# Everything the worker processes run is defined here, before the pool forks.
def draw(args):
    split, start, stop = args
    from tfmatch.data import synthetic_shapes as ss
    src = ss.SyntheticShapes(split, seed=0, image_size=SIZE, canvas_size=CANVAS, augment=(split == "train"))
    items = [src.sample(i) for i in range(start, stop)]
    image = np.stack([np.round(x[0]) for x in items]).astype(np.uint8)
    return image, np.stack([x[1] for x in items]).astype(np.uint8), np.stack([x[2] for x in items]).astype(np.uint8)


def count_test():
    from tfmatch.data import synthetic_shapes as ss
    return sum(ss.split_size(p, "test") for p in ss.PRIMITIVES)  # 500 per primitive, truncated


def make(pool, split, count):
    chunks = [(split, s, min(s + 100, count)) for s in range(0, count, 100)]
    parts = pool.map(draw, chunks)
    return [np.concatenate([p[k] for p in parts]) for k in range(3)]


def classical(name, image):
    import cv2
    if name == "fast":
        kps = cv2.FastFeatureDetector_create(threshold=10).detect(image)
        return np.array([k.pt for k in kps]).reshape(-1, 2), np.array([k.response for k in kps])
    response = (cv2.cornerHarris(np.float32(image), 4, 3, 0.04) if name == "harris"
                else cv2.cornerMinEigenVal(np.float32(image), 4, 3))
    pooled = cv2.dilate(response, np.ones((9, 9), np.uint8))  # NMS 4
    ys, xs = np.nonzero((response == pooled) & (response > 1e-6 * max(response.max(), 1e-12)))
    order = np.argsort(-response[ys, xs])[:300]
    return np.stack([xs[order], ys[order]], -1).astype(np.float64), response[ys, xs][order]


def score(args):
    """(name, detections or None for an OpenCV detector, test images, ground truth) -> (name, metrics)."""
    name, dets, images, gt = args
    from tfmatch.methods.superpoint.evaluation import detection_pr
    if dets is None:
        dets = [classical(name, im) for im in images]
    return name, {m: round(float(v), 4) for m, v in detection_pr(dets, gt, 2.0).items()}


def save(results):
    with open(os.path.join(out_dir, "superpoint_gpu.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    results = {"date": time.strftime("%Y-%m-%d"), "host": platform.node(), "stages": []}
    t0 = time.time()
    # Fork before this process imports TensorFlow or JAX; the workers import tfmatch themselves. The pool
    # stays up for the scoring after training.
    pool = mp.get_context("fork").Pool(os.cpu_count())
    test_count = min(pool.apply(count_test), int(os.environ.get("TEST_LIMIT", "100000")))
    train = make(pool, "train", pool_size)
    test = make(pool, "test", test_count)
    results["data_seconds"] = round(time.time() - t0, 1)
    results["pool_images"], results["test_images"] = pool_size, test_count
    print(f"[magicpoint] pool of {pool_size} and {test_count} test images drawn in {results['data_seconds']} s",
          flush=True)

    import jax
    import keras
    results["device"] = str(jax.devices()[0].device_kind)
    results["backend"] = keras.backend.backend()
    results["jax"] = jax.__version__
    results["keras"] = keras.__version__

    import gin
    from tfmatch import config
    from tfmatch.methods.superpoint.evaluation import keypoint_map_to_points
    from tfmatch.runtime import checkpoints, trainer

    results["train_seconds"] = train_seconds
    # The recipe's network (magicpoint.gin), so that the saved model_dir feeds the next stages like a run.
    keras.utils.set_random_seed(0)
    config.parse(["methods/superpoint/magicpoint.gin"],
                 ["MagicPoint.dustbin_bias = 5.0", "MagicPoint.max_keypoints = 300"], finalize=False)
    model = trainer.build_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))

    class Budget(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.steps, self.start, self.warm = 0, time.time(), None

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if self.steps == 20:
                self.warm = (time.time(), self.steps)
            if time.time() - self.start > train_seconds:
                self.model.stop_training = True

    budget = Budget()
    data = {"image": train[0][..., None], "keypoint_map": train[1], "valid_mask": train[2]}
    history = model.fit(data, batch_size=64, epochs=100000, verbose=2, shuffle=True, callbacks=[budget])
    t_end = time.time()
    results["train_steps"] = budget.steps
    warm_time, warm_steps = budget.warm or (budget.start, 0)  # after the first 20 (compiling) steps
    results["train_steps_per_second"] = round((budget.steps - warm_steps) / max(t_end - warm_time, 1e-9), 2)
    results["epochs_over_pool"] = round(budget.steps * 64 / pool_size, 1)
    results["final_loss"] = float(history.history["loss"][-1])
    magicpoint_dir = os.path.join(work_dir, "magicpoint")
    checkpoints.save(magicpoint_dir, model, step=budget.steps)
    with open(os.path.join(magicpoint_dir, config.OPERATIVE_CONFIG), "w") as f:
        f.write(gin.config_str())  # every binding: load_model rebuilds this network from it
    print(f"[magicpoint] {budget.steps} steps, {results['train_steps_per_second']} steps/s; saved "
          f"{magicpoint_dir}", flush=True)

    # Held-out evaluation: the model and the OpenCV baselines through the same metric (in the pool).
    t = time.time()
    gt = [keypoint_map_to_points(m) for m in test[1]]
    images = test[0].astype(np.float32)[..., None]
    dets = []
    for s in range(0, len(images), 100):
        o = model.extract(images[s:s + 100])
        k, sc, v = (np.asarray(o[n]) for n in ("keypoints", "scores", "valid"))
        dets += [(k[i][v[i]], sc[i][v[i]]) for i in range(len(k))]
    first = min(900, len(gt))  # the subset the earlier runs were scored on
    jobs = [("magicpoint", dets, None, gt), (f"magicpoint_first{first}", dets[:first], None, gt[:first])]
    jobs += [(name, None, test[0], gt) for name in ("fast", "harris", "shi_tomasi")]
    results["detection"] = dict(pool.map(score, jobs, chunksize=1))
    pool.terminate()
    results["scoring_seconds"] = round(time.time() - t, 1)
    results["stages"].append("magicpoint")
    save(results)
    print(json.dumps(results["detection"], indent=1), flush=True)

    lines = [f"### SuperPoint / MagicPoint on {results['device']} (JAX), {results['date']}", ""]
    d = results["detection"]
    lines += [f"MagicPoint, {results['train_steps']} steps in {train_seconds:.0f} s "
              f"({results['train_steps_per_second']} steps/s, batch 64, 120x160, pool of {pool_size} augmented "
              f"images), held-out synthetic shapes ({results['test_images']} images, 2 px):", "",
              "| detector | mAP | precision | recall |", "|---|---|---|---|"]
    for k in d:
        lines.append(f"| {k} | {d[k]['average_precision']:.3f} | {d[k]['precision']:.3f} | "
                     f"{d[k]['recall']:.3f} |")
    with open(os.path.join(out_dir, "superpoint_gpu.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
EOF
    stamp "magicpoint done"
fi

if has speed; then
    # Measured alone: first wait for other jobs sharing this GPU (WAIT_FOR: files they write when done;
    # scripts/gpu/superpoint_patch_desc_gpu.sh uses it), at most WAIT_LIMIT s.
    waited=0
    for flag_file in $(echo "${WAIT_FOR:-}" | tr ',' ' '); do
        while [ ! -f "$flag_file" ] && [ "$waited" -lt "${WAIT_LIMIT:-560}" ]; do sleep 2; waited=$((waited + 2)); done
    done
    stamp "speed start"
    "$PY" scripts/gpu/superpoint_speed.py "$OUT/superpoint_speed.json" > "$OUT/superpoint_speed.log" 2>&1 || {
        tail -n 20 "$OUT/superpoint_speed.log"; exit 1; }
    stamp "speed done"
fi

if has adapt; then
    stamp "homographic adaptation start"
    start=$(date +%s)
    "$PY" -m data_tools.superpoint_export_labels --model_dir "$MAGICPOINT_DIR" --images "$PHOTOS" --out "$LABELS" \
        --num_homographies "${NUM_HOMOGRAPHIES:-100}" --batch_size 8 > "$OUT/adapt.log" 2>&1 || {
        tail -n 30 "$OUT/adapt.log"; exit 1; }
    tail -n 2 "$OUT/adapt.log"
    echo "adaptation_seconds=$(( $(date +%s) - start ))" >> "$CHAIN"
    echo "num_homographies=${NUM_HOMOGRAPHIES:-100}" >> "$CHAIN"
    stamp "homographic adaptation done"
fi

if has joint && [ "$JOINT_SECONDS" -gt 0 ]; then
    seconds=$JOINT_SECONDS
    if [ -n "${JOINT_DEADLINE:-}" ]; then  # stop by then, but train at least JOINT_MIN seconds
        left=$(( JOINT_DEADLINE - $(date +%s) ))
        [ "$left" -lt "$seconds" ] && seconds=$left
        [ "$seconds" -lt "${JOINT_MIN:-120}" ] && seconds=${JOINT_MIN:-120}
    fi
    stamp "joint training start ($seconds s)"
    start=$(date +%s)
    # The user-facing command; SIGINT, then SIGKILL 5 s later (a CPU dry run did not exit on SIGINT alone);
    # the last checkpoint (every JOINT_EPOCH steps) stays.
    timeout -k 5 --signal=INT "$seconds" "$PY" -m tfmatch.train \
        --gin_file configs/methods/superpoint/superpoint.gin \
        --gin_bindings "IMAGE_DIR = '$PHOTOS'" --gin_bindings "LABEL_DIR = '$LABELS'" \
        --gin_bindings "MAGICPOINT_DIR = '$MAGICPOINT_DIR'" \
        --gin_bindings "image_folder_dataset.processes = ${JOINT_PROCESSES:-16}" \
        --gin_bindings "train.steps_per_epoch = $JOINT_EPOCH" \
        --gin_bindings "train.max_steps = $(( JOINT_EPOCH * 1000 ))" --gin_bindings "train.log_every = ${JOINT_LOG_EVERY:-50}" \
        ${JOINT_BINDINGS:-} --model_dir "$SUPERPOINT_DIR" > "$OUT/joint_train.log" 2>&1 || true
    grep -v "^I0000\|^WARNING: All log" "$OUT/joint_train.log" | tail -n 15
    echo "joint_seconds=$(( $(date +%s) - start ))" >> "$CHAIN"
    echo "joint_limit_seconds=$seconds" >> "$CHAIN"
    stamp "joint training stopped"
fi

# Summary of the chain and the model_dirs (operative config + newest checkpoint each: loadable elsewhere).
"$PY" - "$OUT" "$WORK_DIR" "$CHAIN" <<'EOF'
import json, os, re, sys, tarfile

out, work, chain = sys.argv[1:4]
from tfmatch import config
from tfmatch.runtime import checkpoints

summary = {}
if os.path.exists(chain):
    for line in open(chain):
        key, _, value = line.strip().partition("=")
        summary[key] = float(value) if re.fullmatch(r"[0-9.]+", value) else value
labels = os.path.join(work, "labels")
if os.path.isdir(labels):
    import numpy as np
    counts = [len(np.load(os.path.join(labels, n))["pts"]) for n in os.listdir(labels) if n.endswith(".npz")]
    summary["adaptation_images"] = len(counts)
    summary["labels_per_image"] = round(float(np.mean(counts)), 1) if counts else 0
log = os.path.join(out, "joint_train.log")
if os.path.exists(log):
    lines = open(log).read().splitlines()
    summary["joint_log"] = [l for l in lines if l.startswith(("step ", "[tfmatch]")) or "Error" in l][-30:]
packed = []
tar_path = os.path.join(out, "superpoint_models.tar")
with tarfile.open(tar_path, "w") as tar:
    for name in ("magicpoint", "superpoint"):
        d = os.path.join(work, name)
        newest = checkpoints.latest_checkpoint(d) if os.path.isdir(d) else None
        summary[f"{name}_checkpoints"] = [s for s, _ in checkpoints.list_checkpoints(d)] if newest else []
        if newest:
            for path in (os.path.join(d, config.OPERATIVE_CONFIG), newest):
                tar.add(path, os.path.join(name, os.path.relpath(path, d)))
            packed.append(os.path.relpath(newest, work))
summary["packed"] = packed
if os.path.getsize(tar_path) > 15 * 2**20:  # at most 16 MiB a file comes back from the device
    with open(tar_path, "rb") as f:
        for i, chunk in enumerate(iter(lambda: f.read(15 * 2**20), b"")):
            with open(f"{tar_path}.part{i}", "wb") as part:
                part.write(chunk)
    os.remove(tar_path)
    summary["tar_parts"] = i + 1
with open(os.path.join(out, "superpoint_chain.json"), "w") as f:
    json.dump(summary, f, indent=1)
print(json.dumps({k: v for k, v in summary.items() if k != "joint_log"}), flush=True)
EOF
stamp "done"
