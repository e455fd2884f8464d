"""Where ASLFeat's training step spends its time on one GPU (JAX): ablations at batch 2, 480 x 480."""
import json, os, sys, time
os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, "tests/methods/aslfeat")
import jax, keras, numpy as np
from keras import ops
from planes import TRAIN_PHOTOS, make_batch
from tfmatch.methods.aslfeat import ASLFeat
from tfmatch.methods.aslfeat.network import standardize
from tfmatch.geometry.depth_warp import warp_with_depth

KEYS = ("image0", "image1", "depth0", "depth1", "K0", "K1", "R_0to1", "t_0to1")
b = make_batch(np.random.default_rng(0), TRAIN_PHOTOS, 2, size=480, focal=480.0)
b = {k: jax.device_put(b[k]) for k in KEYS}
res = {}

def timeit(name, f, *args, n=30):
    out = f(*args); jax.block_until_ready(out)
    t = time.perf_counter()
    for _ in range(n):
        out = f(*args)
    jax.block_until_ready(out)
    res[name] = round(1000 * (time.perf_counter() - t) / n, 2)
    print(name, res[name], "ms", flush=True)

for label, kw in (("full", {}), ("conv6_level_only", dict(multi_level=False))):
    m = ASLFeat(**kw)
    m(b, training=False)
    tv = [v.value for v in m.trainable_variables]; ntv = [v.value for v in m.non_trainable_variables]

    def loss_fn(tv, ntv, batch):
        pred, ntv2 = m.stateless_call(tv, ntv, batch, training=True)
        return m.loss_terms(batch, pred)["descriptor_loss"], ntv2
    grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    timeit(f"{label}_loss_and_grad_ms", grad, tv, ntv, b)
    fwd = jax.jit(lambda tv, ntv, x: m.net.stateless_call(
        [v.value for v in m.net.trainable_variables], [v.value for v in m.net.non_trainable_variables], x,
        training=False)[0]["score_map"])
    timeit(f"{label}_net_forward_one_tower_ms", fwd, tv, ntv, standardize(b["image0"]))

grid = np.stack(np.meshgrid(np.arange(480.0), np.arange(480.0), indexing="xy"), -1).reshape(1, -1, 2)
grid = jax.device_put(np.repeat(grid, 2, 0).astype("float32"))
warp = jax.jit(lambda g, bb: warp_with_depth(g, bb["depth0"], bb["depth1"], bb["K0"], bb["K1"], bb["R_0to1"],
                                             bb["t_0to1"])[0])
timeit("warp_all_pixels_ms", warp, grid, b)
topk = jax.jit(lambda x: jax.lax.top_k(x, 512))
timeit("top_k_230k_ms", topk, jax.random.uniform(jax.random.PRNGKey(0), (2, 480 * 480)))
print(json.dumps(res))
with open(os.path.join(os.environ.get("OUT", "/tmp"), "aslfeat_gpu_ablation.json"), "w") as f:
    json.dump(res, f, indent=1)
