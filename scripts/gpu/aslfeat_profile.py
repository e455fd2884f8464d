"""Which kernels take ASLFeat's training step time on one GPU (JAX): a profiler trace, summed per kernel.

    KERAS_BACKEND=jax python3 scripts/gpu/aslfeat_profile.py [OUT_JSON] [float32,bfloat16,float32:autodiff]

Each variant is a compute dtype, optionally followed by ``:`` and ``+``-joined options that put back an earlier
form of the step, to measure what each change saves: ``autodiff`` differentiates the peakiness score by autodiff
instead of its hand-written gradient (``tfmatch/layers/peakiness.py``), ``separate`` runs the two towers as two
calls of the network instead of one call of two groups, ``cudnn0`` runs the image layer (conv0) through cuDNN
instead of im2col + matmul, ``bn2pass`` computes batch norm's statistics with ``ops.moments`` (two passes) instead of
``shifted_moments`` (one). Example: ``bfloat16,bfloat16:separate+cudnn0``.

Runs the model-only training step of ``aslfeat_speed.py`` (batch 2, 480 x 480 synthetic plane pairs on the device)
ten times under ``jax.profiler.trace`` for each variant (writing the optimised HLO beside OUT_JSON), reads the
trace's XPlane protobuf with the parser that ships inside TensorFlow (no TensorBoard profile plugin needed), and
reports, for every line (CUDA stream, "XLA Ops", ...) of every device plane, the total time and the 25 longest event
names with their share and count per step, plus a coarse split: convolution / matmul kernels, reductions,
transposes and copies, other fusions. The numbers say whether the step is bound by the convolutions' kernels, by
elementwise passes (BN, ReLU, casts), or by layout changes, which the step time alone cannot.
"""

import collections
import glob
import json
import os
import re
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import aslfeat_speed as speed  # noqa: E402

STEPS = 10
CATEGORIES = (  # first match wins; kernel and HLO names differ across CUDA/XLA versions, hence the wide patterns
    ("convolution/matmul", re.compile(r"conv|cudnn|xmma|gemm|cutlass|sm\d+_|wgrad|dgrad|fprop|implicit", re.I)),
    ("transpose/copy", re.compile(r"transpose|copy|memcpy|memset", re.I)),
    ("reduction", re.compile(r"reduce|reduction", re.I)),
    ("other fusion/elementwise", re.compile(r".")),
)


PARTS = (  # first match wins, on the op names (Keras scopes) inside a kernel's fused computation
    ("detector (peakiness)", re.compile(r"peakiness")),
    ("batch norm / relu", re.compile(r"/bn/|relu")),
    ("loss and sampling", re.compile(r"loss|contrastive|sample|take_along|top_k|warp")),
)


def kernel_parts(hlo_text):
    """``{kernel name: part}`` from the optimised HLO: a fusion ``fusion.12`` runs as kernel ``fusion_12``; its part is
    the first of ``PARTS`` that an op name inside its fused computation matches; cuDNN calls are convolutions."""
    bodies = dict(re.findall(r"\n%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo_text, re.S))
    parts = {}
    for name, rest in re.findall(r"\n\s*(?:ROOT )?%([\w.\-]+) = ([^\n]*)", hlo_text):
        kernel = re.sub(r"\.(\d+)$", r"_\1", name)
        if "__cudnn$conv" in rest:
            parts[kernel] = "convolution"
            continue
        called = re.search(r"calls=%([\w.\-]+)", rest)
        text = bodies.get(called.group(1), "") if called else rest
        op_names = " ".join(re.findall(r'op_name="([^"]*)"', text))
        parts[kernel] = next((part for part, pattern in PARTS if pattern.search(op_names)), "other")
    return parts


def summarise(xspace_path, steps, planes=r"device|gpu", parts=None):
    """``{plane: {line: {"total_ms_per_step", "categories", "parts", "top": [[name, ms_per_step, share, count]]}}}``
    for the planes whose name matches ``planes`` (GPU: "/device:GPU:0"; on a CPU the events are on "/host:CPU");
    ``parts`` (``kernel_parts``) groups all kernels by the part of the model they belong to (cuDNN kernels, whose
    names are not HLO names, count as convolution)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xspace_path, "rb") as f:
        space.ParseFromString(f.read())
    report = {}
    for plane in space.planes:
        if not re.search(planes, plane.name, re.I):
            continue
        names = {key: (meta.display_name or meta.name) for key, meta in plane.event_metadata.items()}
        lines = {}
        for line in plane.lines:
            totals, counts = collections.Counter(), collections.Counter()
            for event in line.events:
                name = names.get(event.metadata_id, str(event.metadata_id))
                totals[name] += event.duration_ps
                counts[name] += 1
            total = sum(totals.values())
            if not total:
                continue
            categories, by_part = collections.Counter(), collections.Counter()
            for name, ps in totals.items():
                category = next(c for c, pattern in CATEGORIES if pattern.search(name))
                categories[category] += ps
                by_part[(parts or {}).get(name, "convolution" if category == "convolution/matmul" else "other")] += ps
            lines[line.name or str(line.id)] = {
                "total_ms_per_step": round(total / 1e9 / steps, 3),
                "categories": {c: round(ps / total, 3) for c, ps in categories.most_common()},
                "parts_ms_per_step": {p: round(ps / 1e9 / steps, 3) for p, ps in by_part.most_common()},
                "top": [[name[:160], round(ps / 1e9 / steps, 4), round(ps / total, 3), counts[name] // steps]
                        for name, ps in totals.most_common(25)],
            }
            if os.environ.get("PROFILE_ALL_KERNELS"):  # every kernel with its part: [name, ms per step, calls, part]
                lines[line.name or str(line.id)]["kernels"] = [
                    [name[:100], round(ps / 1e9 / steps, 4), counts[name] // steps, (parts or {}).get(name, "")]
                    for name, ps in totals.most_common()]
        if lines:
            report[plane.name] = lines
    return report


class Patches:
    """Puts back the earlier forms of the step named in a variant's options (see the module docstring)."""

    def __init__(self, options):
        self.options = set(filter(None, options.split("+")))
        unknown = self.options - {"autodiff", "separate", "cudnn0", "bn2pass"}
        if unknown:
            raise ValueError(f"unknown variant options {sorted(unknown)}")

    def __enter__(self):
        from keras import ops

        import tfmatch.layers.peakiness as peakiness
        import tfmatch.methods.aslfeat.network as network

        self.saved = (peakiness.peakiness_score, network.ASLFeatNet.call, network.conv2d_as_matmul,
                      network.shifted_moments)
        if "autodiff" in self.options:
            peakiness.peakiness_score = lambda f, d, scale=1.0: peakiness.peakiness_score_autodiff(
                ops.cast(f, "float32") / scale, d)
        if "separate" in self.options:
            grouped_call = network.ASLFeatNet.call

            def separate_calls(net, images, training=False, groups=1):
                if groups == 1:
                    return grouped_call(net, images, training=training)
                outs = [grouped_call(net, part, training=training) for part in ops.split(images, groups, axis=0)]
                return {key: ops.concatenate([out[key] for out in outs], axis=0) for key in outs[0]}

            network.ASLFeatNet.call = separate_calls
        if "cudnn0" in self.options:
            network.conv2d_as_matmul = lambda x, kernel: ops.conv(x, ops.cast(kernel, x.dtype), padding="same")
        if "bn2pass" in self.options:
            network.shifted_moments = lambda parts: ops.moments(parts, axes=[1, 2, 3], keepdims=True)
        return self

    def __exit__(self, *exc):
        import tfmatch.layers.peakiness as peakiness
        import tfmatch.methods.aslfeat.network as network

        (peakiness.peakiness_score, network.ASLFeatNet.call, network.conv2d_as_matmul,
         network.shifted_moments) = self.saved
        return False


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.environ.get("OUT", "/tmp"), "aslfeat_profile.json")
    variants = (sys.argv[2] if len(sys.argv) > 2 else "float32,bfloat16,float32:autodiff,bfloat16:autodiff").split(",")
    rng = np.random.default_rng(0)
    pairs = [speed.make_batch(rng, speed.TRAIN_PHOTOS, 1, size=speed.SIZE, focal=float(speed.SIZE)) for _ in range(2)]
    batch = {k: jax.device_put(np.concatenate([p[k] for p in pairs])) for k in speed.KEYS}
    results = {"device": str(jax.devices()[0].device_kind), "jax": jax.__version__, "date": time.strftime("%Y-%m-%d"),
               "size": [speed.SIZE, speed.SIZE], "batch": 2, "steps": STEPS}
    for variant in variants:
        dtype, _, options = variant.partition(":")
        with Patches(options):  # active while the step is traced: at its first call and in lower()
            step, state = speed.build_train_step(batch, compute_dtype=dtype)
            for _ in range(3):  # compile and warm up outside the trace
                jax.block_until_ready(step(*state, batch))
            start = time.perf_counter()
            for _ in range(STEPS):
                out = step(*state, batch)
            jax.block_until_ready(out)
            results[f"{variant}_ms_per_step_untraced"] = round(1000 * (time.perf_counter() - start) / STEPS, 3)
            # The optimised HLO beside the profile: layouts of the cuDNN calls, what XLA fused and what it did not.
            hlo_path = os.path.join(os.path.dirname(out_path) or ".", f"aslfeat_hlo_{variant.replace(':', '_')}.txt")
            hlo_text = step.lower(*state, batch).compile().as_text()
            with open(hlo_path, "w") as f:
                f.write(hlo_text)
            with tempfile.TemporaryDirectory() as trace_dir:
                with jax.profiler.trace(trace_dir):
                    for _ in range(STEPS):
                        out = step(*state, batch)
                    jax.block_until_ready(out)
                paths = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
                results[variant] = (summarise(paths[0], STEPS, parts=kernel_parts(hlo_text)) if paths
                                    else {"error": "no xplane.pb written"})
        print(json.dumps({variant: results[variant]})[:4000], flush=True)
        with open(out_path, "w") as f:  # what is done so far survives a time limit
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
