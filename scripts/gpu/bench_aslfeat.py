"""ASLFeat speed on one GPU, JAX backend, model only (no tf.data: TensorFlow is not on the device machine)."""
import json, os, sys, time
os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, "tests/methods/aslfeat")
import jax, keras, numpy as np
from planes import TRAIN_PHOTOS, make_batch
from tfmatch.methods.aslfeat import ASLFeat

res = {"device": str(jax.devices()[0].device_kind), "jax": jax.__version__, "keras": keras.__version__}
KEYS = ("image0", "image1", "depth0", "depth1", "K0", "K1", "R_0to1", "t_0to1")
rng = np.random.default_rng(0)
S = 480
pairs = [make_batch(rng, TRAIN_PHOTOS, 1, size=S, focal=480.0) for _ in range(16)]
data = {k: np.concatenate([p[k] for p in pairs]) for k in KEYS}
DCN = dict(deform_type="u", trainable_scopes=("conv6_0", "conv6_1", "conv6"), update_bn_moving_stats=False,
           weight_decay=0.0)
for stage, kw in (("base", {}), ("dcn", DCN)):
    for bs in (2, 8):
        keras.utils.set_random_seed(0)
        m = ASLFeat(**kw)
        sched = keras.optimizers.schedules.ExponentialDecay(0.1 if stage == "base" else 0.01, 200000, 0.1)
        m.compile(optimizer=keras.optimizers.SGD(sched, momentum=0.9), jit_compile=True)
        rep = {k: np.concatenate([v] * 8) for k, v in data.items()}  # 128 pairs
        m.fit(rep, batch_size=bs, epochs=1, steps_per_epoch=4, verbose=0)  # compile
        n = len(rep["image0"]) // bs
        t = time.perf_counter()
        h = m.fit(rep, batch_size=bs, epochs=2, verbose=0)
        dt = time.perf_counter() - t
        res[f"train_{stage}_b{bs}_pairs_per_s"] = round(2 * n * bs / dt, 1)
        res[f"train_{stage}_b{bs}_loss"] = [round(float(x), 4) for x in h.history["descriptor_loss"]]
        print(stage, bs, res[f"train_{stage}_b{bs}_pairs_per_s"], flush=True)
    m = ASLFeat(max_keypoints=5000, **kw)
    m.build_for_inference()
    for bs in (1, 16):
        x = np.random.default_rng(1).uniform(0, 255, size=(bs, 480, 640, 1)).astype("float32")
        f = jax.jit(lambda im: m.extract(im))
        jax.block_until_ready(f(x))
        t = time.perf_counter()
        for _ in range(20):
            out = f(x)
        jax.block_until_ready(out)
        res[f"infer_{stage}_b{bs}_images_per_s"] = round(20 * bs / (time.perf_counter() - t), 1)
        print(stage, "infer", bs, res[f"infer_{stage}_b{bs}_images_per_s"], flush=True)
res["peak_mb"] = jax.devices()[0].memory_stats().get("peak_bytes_in_use", 0) // 2**20
print(json.dumps(res))
with open(os.path.join(os.environ.get("OUT", "/tmp"), "aslfeat_gpu.json"), "w") as f:
    json.dump(res, f, indent=1)
