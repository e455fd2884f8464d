"""SuperPoint inference speed on one GPU (JAX), by part, and where the kernel time goes (issue 6, item 8).

    KERAS_BACKEND=jax python3 scripts/gpu/superpoint_speed.py [OUT_JSON]

At 480 x 640, fp32 (float32 variables and inputs; XLA's default matmul precision), 1000 keypoints, random
weights (the speed does not depend on them), images already on the device. Times, medians of 5 x 20 calls:
1. the 1-channel input layer alone, three ways (cuDNN; cuDNN on a 4-channel zero-padded image; im2col + matmul),
   and the NMS's 9 x 9 window maximum in one pass or as rows then columns;
2. ``extract`` (network + heatmap + NMS + top-k + descriptor sampling, the SavedModel's function) at batch 32 for
   those choices, with one candidate per NMS block (the default) and over all pixels, and the network alone;
   whether the keypoints and descriptors stay the same;
3. a ``jax.profiler`` trace of the fastest ``extract`` summed per kernel and per part (convolution / detection /
   descriptor sampling / other), with ``aslfeat_profile.summarise``.
"""

import glob
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import aslfeat_profile as profile  # noqa: E402
import aslfeat_speed as speed  # noqa: E402
from tfmatch.methods.superpoint.model import SuperPoint  # noqa: E402

HEIGHT, WIDTH = 480, 640
PARTS = (  # first match wins, on the Keras op names inside each fused kernel
    ("detection (softmax, NMS, top-k)", profile.re.compile(r"top_k|max_pool|nms|softmax|heatmap|depth_to_space|where")),
    ("descriptor sampling", profile.re.compile(r"sample|normalize|take|gather|grid")),
)


def network_flops():
    """Multiply-adds x 2 of the VGG encoder and both heads at 480 x 640."""
    h, w, flops, cin = HEIGHT, WIDTH, 0, 1
    for cout, pool_after in ((64, 0), (64, 1), (64, 0), (64, 1), (128, 0), (128, 1), (128, 0), (128, 0)):
        flops += 2 * h * w * 9 * cin * cout
        cin = cout
        if pool_after:
            h, w = h // 2, w // 2
    return flops + 2 * h * w * (9 * 128 * 256 + 256 * 65 + 9 * 128 * 256 + 256 * 256)


def timed(fn, args):
    """Seconds per call: median of SPEED_ROUNDS x SPEED_REPS calls (fewer for a CPU dry run)."""
    reps, rounds = int(os.environ.get("SPEED_REPS", "20")), int(os.environ.get("SPEED_ROUNDS", "5"))
    return speed.median_ms(fn, *args, calls=reps, repeats=rounds) / 1000


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.environ.get("OUT", "/tmp"), "superpoint_speed.json")
    batch_size = int(os.environ.get("SPEED_BATCH", "32"))
    results = {"device": str(jax.devices()[0].device_kind), "jax": jax.__version__, "keras": keras.__version__,
               "date": time.strftime("%Y-%m-%d"), "size": [HEIGHT, WIDTH], "batch": batch_size,
               "gflop_per_image": round(network_flops() / 1e9, 1),
               "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision)}

    def save():
        with open(out_path, "w") as f:
            json.dump(results, f, indent=1)

    images = jax.device_put(np.random.default_rng(0).uniform(0, 255, (batch_size, HEIGHT, WIDTH, 1)).astype(np.float32))

    # 1. The input layer alone (1 -> 64 channels, 3x3, bias and ReLU): cuDNN on one channel, cuDNN on the image
    # zero-padded to 4 channels, and im2col (9 taps) times a [9, 64] matrix.
    kernel = jax.device_put(np.random.default_rng(1).normal(0, 0.1, (3, 3, 1, 64)).astype(np.float32))
    bias = jax.device_put(np.zeros(64, np.float32))

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def taps(x):
        padded = jax.numpy.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        return jax.numpy.concatenate([padded[:, dy:dy + HEIGHT, dx:dx + WIDTH] for dy in range(3) for dx in range(3)], -1)

    first_layer = {
        "cudnn_1_channel": lambda x: jax.nn.relu(conv(x, kernel) + bias),
        "cudnn_4_channels": lambda x: jax.nn.relu(conv(jax.numpy.pad(x, ((0, 0),) * 3 + ((0, 3),)),
                                                       jax.numpy.pad(kernel, ((0, 0), (0, 0), (0, 3), (0, 0)))) + bias),
        "im2col_matmul": lambda x: jax.nn.relu(taps(x) @ kernel.reshape(9, 64) + bias),
    }
    reference = jax.jit(first_layer["cudnn_1_channel"])(images)
    for name, fn in first_layer.items():
        fn = jax.jit(fn)
        results[f"first_layer_{name}_ms"] = round(1000 * timed(fn, (images,)), 3)
        results[f"first_layer_{name}_max_abs_difference"] = float(jax.numpy.max(jax.numpy.abs(fn(images) - reference)))
    # The 9 x 9 window maximum of the NMS at full resolution, in one pass or as rows then columns.
    from tfmatch.layers import nms as nms_layers

    separable_window_max = nms_layers._window_max

    def square_window_max(x, size):
        return keras.ops.max_pool(x[..., None], pool_size=size, strides=1, padding="same")[..., 0]

    heat = images[..., 0] / 255.0
    for name, fn in (("square", square_window_max), ("separable", separable_window_max)):
        results[f"window_max_9_{name}_ms"] = round(1000 * timed(jax.jit(lambda x: fn(x, 9)), (heat,)), 3)
    print(json.dumps(results), flush=True)
    save()

    # 2. extract end to end, and the network alone, for each choice of input layer and NMS window.
    outputs, compiled, weights = {}, {}, None
    for cell_candidates, as_matmul, window in ((True, False, "square"), (True, False, "separable"),
                                               (True, True, "square"), (True, True, "separable"),
                                               (False, True, "separable")):
        nms_layers._window_max = separable_window_max if window == "separable" else square_window_max
        sp = SuperPoint(max_keypoints=1000, detection_threshold=0.015, cell_candidates=cell_candidates)
        sp.build_for_inference(HEIGHT, WIDTH)
        sp.net.encoder[0].as_matmul = as_matmul
        if weights is None:  # every variant runs the same random weights
            weights = sp.get_weights()
        sp.set_weights(weights)
        variables = list(sp.trainable_variables) + list(sp.non_trainable_variables)
        values = [v.value for v in variables]

        def stateless(fn):
            def run(values, *args):
                with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                    return fn(*args)
            return jax.jit(run)

        extract = stateless(lambda x: sp.extract(x))
        tag = ("one_per_block" if cell_candidates else "all_pixels") + ("_im2col" if as_matmul else "_cudnn") + f"_{window}"
        seconds = timed(extract, (values, images))
        results[f"extract_{tag}_ms"] = round(1000 * seconds, 3)
        results[f"extract_{tag}_images_per_second"] = round(batch_size / seconds, 1)
        outputs[tag] = jax.device_get(extract(values, images))
        compiled[tag] = extract, values, window
        if window == "separable" and cell_candidates:
            network = stateless(lambda x: sp.run_network(x))
            seconds = timed(network, (values, images))
            net_tag = "im2col" if as_matmul else "cudnn"
            results[f"network_{net_tag}_ms"] = round(1000 * seconds, 3)
            results[f"network_{net_tag}_images_per_second"] = round(batch_size / seconds, 1)
            results[f"network_{net_tag}_tflops"] = round(network_flops() * batch_size / seconds / 1e12, 1)
        print(json.dumps(results), flush=True)
        save()
    base = outputs["one_per_block_cudnn_square"]
    for tag, out in outputs.items():  # the same keypoints and descriptors whatever the kernels (up to TF32 rounding)
        results[f"{tag}_vs_cudnn_square"] = {
            "same_keypoints": float(np.mean(np.all(out["keypoints"] == base["keypoints"], axis=-1))),
            "descriptor_max_abs_difference": float(np.max(np.abs(out["descriptors"] - base["descriptors"]))),
        }
    save()

    # 3. A trace of the fastest extract (one candidate per block), per kernel and per part.
    fastest = min((tag for tag in compiled if tag.startswith("one_per_block")), key=lambda t: results[f"extract_{t}_ms"])
    results["profiled"] = f"extract_{fastest}"
    extract, values, window = compiled[fastest]
    nms_layers._window_max = separable_window_max if window == "separable" else square_window_max  # for lower()
    hlo_text = extract.lower(values, images).compile().as_text()
    with open(os.path.join(os.path.dirname(out_path) or ".", "superpoint_extract_hlo.txt"), "w") as f:
        f.write(hlo_text)
    profile.PARTS = PARTS + (("convolution (bias, relu)", profile.re.compile(r"conv|relu")),)
    jax.block_until_ready(extract(values, images))
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(10):
                out = extract(values, images)
            jax.block_until_ready(out)
        paths = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
        results["extract_profile"] = (profile.summarise(paths[0], 10, parts=profile.kernel_parts(hlo_text))
                                      if paths else {"error": "no xplane.pb written"})
    save()
    print(json.dumps(results)[:6000], flush=True)


if __name__ == "__main__":
    main()
