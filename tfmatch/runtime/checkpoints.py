"""Checkpoints keyed by variable path: resume, partial restore, and loading a trained model.

A checkpoint is one HDF5 file ``model_dir/checkpoints/ckpt-<step>.h5``:

* ``model/<variable path>``: every model variable, keyed by its Keras path without the model's own name
  (``conv0/conv/kernel``), so a run restores into any model whose layers carry the same names (stage 2 of
  ASLFeat from stage 1, SuperPoint from MagicPoint) on any backend;
* ``optimizer/<index>``: the optimizer's variables in order (attribute ``path`` for checking), for resume;
* attributes ``step`` and ``tfmatch_version``.

Files are written under a temporary name and renamed, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import os
import re

import h5py
import numpy as np
from absl import logging

CHECKPOINT_DIR = "checkpoints"
_CKPT_RE = re.compile(r"ckpt-(\d+)\.h5$")


def variable_key(variable, model_name: str | None = None) -> str:
    """A variable's path without the model's name: ``aslfeat/conv0/kernel`` -> ``conv0/kernel``."""
    path = variable.path
    if model_name and path.startswith(model_name + "/"):
        path = path[len(model_name) + 1:]
    return path


def _model_variables(model) -> dict:
    out = {}
    for variable in model.variables:
        key = variable_key(variable, model.name)
        if key in out:
            raise ValueError(
                f"two variables of {model.name} share the path {key!r}: give the layers distinct names")
        out[key] = variable
    return out


def checkpoint_path(model_dir: str, step: int) -> str:
    return os.path.join(model_dir, CHECKPOINT_DIR, f"ckpt-{step:08d}.h5")


def list_checkpoints(model_dir: str) -> list[tuple[int, str]]:
    """``[(step, path)]`` sorted by step."""
    found = []
    for path in glob.glob(os.path.join(model_dir, CHECKPOINT_DIR, "ckpt-*.h5")):
        match = _CKPT_RE.search(path)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(path: str) -> str | None:
    """The newest checkpoint of a model_dir, or ``path`` itself when it is a checkpoint file."""
    if os.path.isfile(path):
        return path
    found = list_checkpoints(path)
    return found[-1][1] if found else None


def save(model_dir: str, model, optimizer=None, step: int = 0, keep: int = 5) -> str:
    """Writes a checkpoint atomically and keeps the newest ``keep`` of them."""
    import tfmatch

    path = checkpoint_path(model_dir, step)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["step"] = int(step)
        f.attrs["tfmatch_version"] = tfmatch.__version__
        group = f.create_group("model")
        for key, variable in _model_variables(model).items():
            group.create_dataset(key, data=np.asarray(variable.numpy()))
        if optimizer is not None and optimizer.built:
            group = f.create_group("optimizer")
            for i, variable in enumerate(optimizer.variables):
                data = group.create_dataset(f"{i:06d}", data=np.asarray(variable.numpy()))
                data.attrs["path"] = variable.path
    os.replace(tmp, path)
    for _, old in list_checkpoints(model_dir)[:-keep] if keep > 0 else []:
        os.remove(old)
    return path


@dataclasses.dataclass
class RestoreReport:
    """What a restore did: counts and the names that did not match."""

    source: str
    step: int
    restored: list
    missing_in_checkpoint: list  # model variables the checkpoint does not have (kept at their initial value)
    unused_in_checkpoint: list  # checkpoint entries the model has no variable for
    excluded: list  # skipped on purpose (exclude patterns)
    shape_mismatch: list
    optimizer_restored: bool = False

    def summary(self) -> str:
        lines = [f"restored {len(self.restored)} variables from {self.source} (step {self.step})"]
        for title, names in (("not in the checkpoint (left as initialised)", self.missing_in_checkpoint),
                             ("in the checkpoint but not in the model", self.unused_in_checkpoint),
                             ("excluded", self.excluded), ("shape mismatch (skipped)", self.shape_mismatch)):
            if names:
                lines.append(f"  {title}: {len(names)}: " + ", ".join(names[:20]) + (" ..." if len(names) > 20 else ""))
        return "\n".join(lines)


def restore(path: str, model, optimizer=None, exclude=(), strict: bool = True) -> RestoreReport:
    """Restores a checkpoint (file or model_dir) into a built model (and a built optimizer, for resume).

    Args:
      exclude: glob patterns of variable keys to leave untouched (``"deform_param/*"``).
      strict: every model variable must be restored and shapes must agree (resume); with ``strict=False`` a
        partial restore reports what did not match (``train.init_checkpoint``).
    """
    ckpt = latest_checkpoint(path)
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint found at {path} (expected {CHECKPOINT_DIR}/ckpt-<step>.h5 or a file)")
    variables = _model_variables(model)
    report = RestoreReport(ckpt, 0, [], [], [], [], [])
    try:
        f = h5py.File(ckpt, "r")
    except OSError as err:
        raise OSError(f"{ckpt}: cannot read checkpoint ({err})") from err
    with f:
        report.step = int(f.attrs.get("step", 0))
        stored = {}
        f["model"].visititems(lambda name, obj: stored.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else None)
        for key, variable in variables.items():
            if any(fnmatch.fnmatch(key, pattern) for pattern in exclude):
                report.excluded.append(key)
            elif key not in stored:
                report.missing_in_checkpoint.append(key)
            elif tuple(stored[key].shape) != tuple(variable.shape):
                report.shape_mismatch.append(f"{key} {tuple(stored[key].shape)} vs {tuple(variable.shape)}")
            else:
                variable.assign(stored[key][()])
                report.restored.append(key)
        report.unused_in_checkpoint = sorted(set(stored) - set(variables))
        if strict and (report.missing_in_checkpoint or report.shape_mismatch):
            raise ValueError(f"{ckpt} does not fit the model:\n{report.summary()}")
        if optimizer is not None and "optimizer" in f:
            group = f["optimizer"]
            names = sorted(group.keys())
            if optimizer.built and len(names) == len(optimizer.variables) and all(
                    tuple(group[n].shape) == tuple(v.shape) for n, v in zip(names, optimizer.variables)):
                for name, variable in zip(names, optimizer.variables):
                    variable.assign(group[name][()])
                report.optimizer_restored = True
            elif strict:
                raise ValueError(f"{ckpt}: optimizer state does not fit ({len(names)} stored, "
                                 f"{len(optimizer.variables)} in the optimizer)")
    logging.info(report.summary())
    return report


def load_model(model_dir: str, gin_bindings=(), build: bool = True):
    """Builds the model of a trained run from its ``operative_config.gin`` and restores its latest checkpoint.

    Used by export, homographic adaptation and anything else that needs a trained network in Python.
    """
    from tfmatch import config
    from tfmatch.runtime import trainer

    if not config.has_saved_config(model_dir):
        raise FileNotFoundError(f"{model_dir}: no {config.OPERATIVE_CONFIG}; is this a tfmatch model_dir?")
    config.parse(model_dir=model_dir, gin_bindings=gin_bindings, finalize=False)
    model = trainer.build_model()
    if build:
        model.build_for_inference()
    report = restore(model_dir, model, strict=False)
    if report.missing_in_checkpoint or report.shape_mismatch:
        raise ValueError(f"{model_dir}: the checkpoint does not hold every inference variable:\n{report.summary()}")
    return model
