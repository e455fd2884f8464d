"""The model-side packages must run on JAX without TensorFlow (DESIGN.md: keras.ops only).

A subprocess blocks `import tensorflow` with a `sys.meta_path` finder, sets KERAS_BACKEND=jax, imports every
module of tfmatch.layers / losses / geometry / methods, then runs a forward pass and a `jax.grad` through
`bilinear_sample` and `warp_points`.
"""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r'''
import importlib, importlib.abc, json, pkgutil, sys

class BlockTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError(f"blocked by test_backend_agnostic: import of {name}")
        return None

sys.meta_path.insert(0, BlockTensorFlow())

import keras
assert keras.backend.backend() == "jax", keras.backend.backend()

failures, imported = {}, []
for package in ("tfmatch.layers", "tfmatch.losses", "tfmatch.geometry", "tfmatch.methods"):
    try:
        module = importlib.import_module(package)
    except Exception as exc:
        failures[package] = repr(exc)
        continue
    imported.append(package)
    for info in pkgutil.walk_packages(module.__path__, prefix=package + "."):
        try:
            importlib.import_module(info.name)
            imported.append(info.name)
        except Exception as exc:
            failures[info.name] = repr(exc)

import jax
import jax.numpy as jnp
import numpy as np
from tfmatch.geometry.homography import warp_points
from tfmatch.layers.sampling import bilinear_sample

fmap = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 6, 3)), "float32")
H = jnp.asarray([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.25], [0.0, 0.0, 1.0]]] * 2)
points = jnp.asarray([[[1.0, 1.0], [2.3, 3.1]]] * 2)

def loss(fmap, points):
    return jnp.sum(bilinear_sample(fmap, warp_points(H, points)) ** 2)

value = jax.jit(loss)(fmap, points)
grad_map, grad_points = jax.jit(jax.grad(loss, argnums=(0, 1)))(fmap, points)
# The other shared blocks compile under jax.jit with static shapes.
from tfmatch.geometry.depth_warp import warp_with_depth
from tfmatch.layers.keypoints import sample_descriptors, select_top_k
from tfmatch.layers.nms import max_pool_nms

K = jnp.asarray([[[10.0, 0, 4.5], [0, 10, 3.5], [0, 0, 1]]])
depth = jnp.full((1, 8, 10), 5.0)
warped, valid = jax.jit(lambda p: warp_with_depth(p, depth, depth, K, K, jnp.eye(3)[None],
                                                  jnp.asarray([[1.0, 0, 0]])))(jnp.full((1, 3, 2), 2.0))
scores = jnp.zeros((1, 16, 20)).at[0, 5, 7].set(1.0)
kpts, _, kvalid, desc = jax.jit(lambda s, d: (lambda k, sc, v: (k, sc, v, sample_descriptors(d, k, 4, "centre")))(
    *select_top_k(max_pool_nms(s, 2), 3, border=2, threshold=0.0)))(scores, jnp.ones((1, 4, 5, 4)))
jit_ok = (np.allclose(np.asarray(warped), [4.0, 2.0], atol=1e-4) and bool(np.asarray(valid).all())
          and np.asarray(kpts)[0, 0].tolist() == [7.0, 5.0] and np.asarray(kvalid)[0].tolist() == [True, False, False]
          and desc.shape == (1, 3, 4))
# The peakiness score's hand-written gradient equals autodiff's under jax.jit.
from tfmatch.layers.peakiness import peakiness_score, peakiness_score_autodiff
feat = jnp.asarray(np.random.default_rng(1).normal(size=(2, 9, 8, 4)), "float32")
up = jnp.asarray(np.random.default_rng(2).normal(size=(2, 9, 8)), "float32")
peak_grads = [jax.jit(jax.grad(lambda f, fn=fn: jnp.sum(fn(f, 2) * up)))(feat)
              for fn in (peakiness_score, peakiness_score_autodiff)]
peak_ok = bool(np.allclose(np.asarray(peak_grads[0]), np.asarray(peak_grads[1]), atol=1e-5))
leaked = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
print("RESULT " + json.dumps({
    "imported": imported, "failures": failures, "leaked": leaked, "value": float(value),
    "grad_finite": bool(np.isfinite(np.asarray(grad_map)).all() and np.isfinite(np.asarray(grad_points)).all()),
    "jit_ok": bool(jit_ok), "peakiness_gradient_ok": peak_ok,
    "grad_nonzero": bool(np.abs(np.asarray(grad_points)).sum() > 0 and np.abs(np.asarray(grad_map)).sum() > 0),
}))
'''


def test_model_packages_run_on_jax_without_tensorflow(subprocess_env):
    pytest.importorskip("jax")
    env = dict(subprocess_env, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"subprocess failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(lines[-1][len("RESULT "):])
    assert not result["failures"], f"modules that do not import on JAX without TensorFlow: {result['failures']}"
    assert not result["leaked"], f"tensorflow modules were imported: {result['leaked'][:5]}"
    for required in ("tfmatch.layers.sampling", "tfmatch.geometry.homography", "tfmatch.geometry.depth_warp"):
        assert required in result["imported"]
    assert result["grad_finite"] and result["grad_nonzero"]
    assert result["value"] > 0
    assert result["peakiness_gradient_ok"], "peakiness_score's hand-written gradient differs from autodiff on JAX"
    assert result["jit_ok"], "warp_with_depth / select_top_k / sample_descriptors give wrong results under jax.jit"
