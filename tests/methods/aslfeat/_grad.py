"""Gradients of a scalar function on the active Keras backend (tests only)."""

import keras
import numpy as np


def gradients(fn, *args):
    """d fn(*args) / d args, as numpy arrays; ``args`` are numpy arrays (float64 keeps finite differences exact)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.convert_to_tensor(a) for a in args]
        with tf.GradientTape() as tape:
            for t in tensors:
                tape.watch(t)
            value = fn(*tensors)
        return [np.asarray(g) for g in tape.gradient(value, tensors)]
    if backend == "jax":
        import jax

        return [np.asarray(g) for g in jax.grad(fn, argnums=tuple(range(len(args))))(*args)]
    if backend == "torch":
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in args]
        fn(*tensors).backward()
        return [t.grad.numpy() for t in tensors]
    raise NotImplementedError(f"no gradient helper for backend {backend}")
