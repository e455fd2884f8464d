"""Where ASLFeat's time goes on one GPU (JAX), model only: training step and extraction, by variant and part.

    KERAS_BACKEND=jax python3 scripts/gpu/aslfeat_speed.py [OUT_JSON]

Inputs are synthetic plane pairs (tests/methods/aslfeat/planes.py) already on the device, so neither tf.data nor
host transfers are in these numbers (``python -m tfmatch.benchmark`` measures those). Every figure is the median
of 5 repeats of 10 (train) or 5 (extract) calls after two untimed ones (compilation), with
``jax.block_until_ready``. Variants:
  * ``float32`` / ``bfloat16``: ``ASLFeat.compute_dtype``;
  * ``conv_pool+gather_resize``: the detector as before 2026-11-25 (dilated average by a depthwise convolution,
    score levels upsampled by gathers), to show what the current code gained;
  * ``conv6_level``: ``multi_level=False`` (the backbone and the loss without the full-resolution levels);
  * ``all_pixel_top_k``: ``cell_candidates=False`` (top-k over every pixel rather than the best of each cell).
"""

import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from tests.methods.aslfeat.planes import TRAIN_PHOTOS, make_batch  # noqa: E402
from tfmatch.layers import keypoints as keypoints_module  # noqa: E402
from tfmatch.layers import peakiness as peakiness_module  # noqa: E402
from tfmatch.methods.aslfeat import ASLFeat  # noqa: E402
from tfmatch.methods.aslfeat import network as network_module  # noqa: E402
from tfmatch.methods.aslfeat.network import standardize  # noqa: E402

SIZE = int(os.environ.get("ASLFEAT_SPEED_SIZE", "480"))  # smaller only for a dry run on a CPU
HEIGHT, WIDTH = SIZE, SIZE * 4 // 3 // 4 * 4
KEYS = ("image0", "image1", "depth0", "depth1", "K0", "K1", "R_0to1", "t_0to1")
RESULTS = {"device": str(jax.devices()[0].device_kind), "jax": jax.__version__, "keras": keras.__version__,
           "date": time.strftime("%Y-%m-%d")}


def median_ms(fn, *args, calls=10, repeats=5):
    jax.block_until_ready(fn(*args))
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        times.append(1000 * (time.perf_counter() - start) / calls)
    return round(float(np.median(times)), 3)


def record(name, value):
    RESULTS[name] = value
    print(f"{name}: {value}", flush=True)


# The detector as it was before 2026-11-25, for the comparison.
def _old_dilated_average_pool(features, dilation):
    d = int(dilation)
    padded = ops.pad(features, [[0, 0], [d, d], [d, d], [0, 0]], mode="reflect")
    kernel = ops.ones((3, 3, features.shape[-1], 1), dtype=features.dtype) / 9.0
    return ops.depthwise_conv(padded, kernel, strides=1, padding="valid", dilation_rate=d)


def _old_resize(maps, height, width):
    shape = ops.shape(maps)

    def axis_weights(size_in, size_out):
        src = ops.cast(ops.arange(size_out), "float32") * (size_in / size_out)
        lo = ops.floor(src)
        lo_i = ops.cast(lo, "int32")
        return lo_i, ops.minimum(lo_i + 1, size_in - 1), src - lo

    y0, y1, fy = axis_weights(shape[1], height)
    x0, x1, fx = axis_weights(shape[2], width)
    rows = ops.take(maps, y0, axis=1) * (1 - fy)[None, :, None] + ops.take(maps, y1, axis=1) * fy[None, :, None]
    return ops.take(rows, x0, axis=2) * (1 - fx)[None, None, :] + ops.take(rows, x1, axis=2) * fx[None, None, :]


class OldDetector:
    def __enter__(self):
        self.saved = peakiness_module.dilated_average_pool, network_module.resize_bilinear_legacy
        peakiness_module.dilated_average_pool = _old_dilated_average_pool
        network_module.resize_bilinear_legacy = _old_resize

    def __exit__(self, *exc):
        peakiness_module.dilated_average_pool, network_module.resize_bilinear_legacy = self.saved


class NoDetector:  # nothing to patch
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def stateless(model, method):
    variables = model.variables

    def run(values, *inputs):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return method(*inputs)

    return jax.jit(run), [v.value for v in variables]


def build_train_step(batch, **kwargs):
    """One jitted training step (loss, gradients, SGD update) of ``ASLFeat(**kwargs)``: ``(step, state)``, called
    as ``step(*state, batch)``."""
    keras.utils.set_random_seed(0)
    model = ASLFeat(**kwargs)
    model(batch, training=False)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)

    def step(trainable, non_trainable, opt_vars, data):
        def loss_fn(trainable):
            pred, new_non_trainable = model.stateless_call(trainable, non_trainable, data, training=True)
            loss = model.loss_terms(data, pred)["descriptor_loss"]
            return loss, new_non_trainable

        (loss, new_non_trainable), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        new_trainable, new_opt = optimizer.stateless_apply(opt_vars, grads, trainable)
        return loss, new_trainable, new_non_trainable, new_opt

    state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables])
    return jax.jit(step), state


def train_step_ms(batch, batch_size, patch, **kwargs):
    with patch:
        jitted, state = build_train_step(batch, **kwargs)
        ms = median_ms(lambda: jitted(*state, batch), calls=10)
        loss = float(jitted(*state, batch)[0])
    return {"ms_per_step": ms, "pairs_per_second": round(1000 * batch_size / ms, 1), "loss": round(loss, 4)}


START = time.perf_counter()


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.environ.get("OUT", "/tmp"), "aslfeat_speed.json")
    rng = np.random.default_rng(0)
    pairs = [make_batch(rng, TRAIN_PHOTOS, 1, size=SIZE, focal=float(SIZE)) for _ in range(8)]
    data = {k: np.concatenate([p[k] for p in pairs]) for k in KEYS}
    dcn = dict(deform_type="u", trainable_scopes=("conv6_0", "conv6_1", "conv6"), update_bn_moving_stats=False,
               weight_decay=0.0)

    # Training step (loss, gradients, SGD update), one jit, inputs on the device; the most telling first.
    batch2 = {k: jax.device_put(v[:2]) for k, v in data.items()}
    for name, patch, kwargs in (("float32", NoDetector(), {}), ("bfloat16", NoDetector(), {"compute_dtype": "bfloat16"}),
                                ("conv_pool+gather_resize_float32", OldDetector(), {}),
                                ("conv6_level_float32", NoDetector(), {"multi_level": False}),
                                ("dcn_float32", NoDetector(), dcn),
                                ("dcn_bfloat16", NoDetector(), dict(dcn, compute_dtype="bfloat16"))):
        record(f"train_b2_{name}", train_step_ms(batch2, 2, patch, **kwargs))
        print(f"  [{time.perf_counter() - START:.0f} s]", flush=True)

    # Extraction at 480 x 640, batch 16 and 1, inputs on the device; then its parts at batch 16.
    images = {b: jax.device_put(rng.uniform(0, 255, (b, HEIGHT, WIDTH, 1)).astype("float32")) for b in (1, 16)}
    for name, patch, kwargs in (("float32", NoDetector(), {}), ("bfloat16", NoDetector(), {"compute_dtype": "bfloat16"}),
                                ("all_pixel_top_k_float32", NoDetector(), {"cell_candidates": False}),
                                ("conv_pool+gather_resize_float32", OldDetector(), {})):
        with patch:
            model = ASLFeat(max_keypoints=5000, **kwargs)
            model.build_for_inference(HEIGHT, WIDTH)
            extract, values = stateless(model, lambda x: model.extract(x))
            for b in (16, 1) if name in ("float32", "bfloat16") else (16,):
                ms = median_ms(extract, values, images[b], calls=5)
                record(f"extract_b{b}_{name}", {"ms": ms, "images_per_second": round(1000 * b / ms, 1)})
            if name in ("float32", "bfloat16"):
                net, values = stateless(model, lambda x: model.net(standardize(x)))
                record(f"extract_part_network_b16_{name}_ms", median_ms(net, values, images[16], calls=5))
                score = jax.device_put(np.asarray(net(values, images[16])["score_map"]))
                detect, values = stateless(model, lambda s: model.detect(s, 5000))
                record(f"extract_part_detect_b16_{name}_ms", median_ms(detect, values, score, calls=5))
    pixels = HEIGHT * WIDTH
    flat = jax.random.uniform(jax.random.PRNGKey(0), (16, pixels + 5000))
    record("top_k_5000_of_all_pixels_b16_ms", median_ms(jax.jit(lambda x: jax.lax.top_k(x, 5000)), flat, calls=5))
    record("top_k_5000_of_quarter_pixels_b16_ms",
           median_ms(jax.jit(lambda x: jax.lax.top_k(x, 5000)), flat[:, : pixels // 4 + 5000], calls=5))
    record("select_top_k_b16_ms", median_ms(jax.jit(lambda s: keypoints_module.select_top_k(s, 5000, 5, 0.5)),
                                            flat[:, :pixels].reshape(16, HEIGHT, WIDTH), calls=5))
    # Batch 8: does the step scale with the batch (compute bound) or not (launch / latency bound)?
    batch8 = {k: jax.device_put(v[:8]) for k, v in data.items()}
    for name, kwargs in (("float32", {}), ("bfloat16", {"compute_dtype": "bfloat16"})):
        record(f"train_b8_{name}", train_step_ms(batch8, 8, NoDetector(), **kwargs))
    # Host transfers of one extract batch (what tfmatch.benchmark adds): images in, outputs out.
    host_images = np.asarray(images[16])
    record("host_to_device_b16_images_ms", median_ms(lambda: jax.device_put(host_images), calls=5))
    model = ASLFeat(max_keypoints=5000)
    model.build_for_inference(HEIGHT, WIDTH)
    extract, values = stateless(model, lambda x: model.extract(x))
    times = []
    for _ in range(5):  # a fresh result each time: a jax.Array keeps its host copy once made
        result = jax.block_until_ready(extract(values, images[16]))
        start = time.perf_counter()
        fetched = {k: np.asarray(v) for k, v in result.items()}
        times.append(1000 * (time.perf_counter() - start))
    record("device_to_host_b16_outputs_ms", round(float(np.median(times)), 3))
    record("output_megabytes_b16", round(sum(v.nbytes for v in fetched.values()) / 2**20, 1))
    RESULTS["peak_gpu_memory_mb"] = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use", 0) // 2**20
    RESULTS["script_seconds"] = round(time.perf_counter() - START, 1)
    with open(out_path, "w") as f:
        json.dump(RESULTS, f, indent=1)
    print(json.dumps(RESULTS))


if __name__ == "__main__":
    main()
