"""gin plumbing shared by every CLI: search path, parse order, operative config.

Parse order (DESIGN.md): ``configs/base/*.gin`` -> the run's saved ``operative_config.gin`` (on resume) ->
each ``--gin_file`` -> each ``--gin_bindings``. Unknown configurables or parameters are errors that name the
file (or the ``--gin_bindings`` entry) they came from, raised before any work starts.
"""

from __future__ import annotations

import glob
import importlib
import inspect
import logging
import os
from pathlib import Path
from typing import Sequence

import gin

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_ROOT = REPO_ROOT / "configs"
OPERATIVE_CONFIG = "operative_config.gin"

# Modules whose import registers configurables with gin. Every CLI imports all of them so that any
# recipe (and any saved operative config) parses.
_REGISTERING_MODULES = (
    "tfmatch.runtime.registry",
    "tfmatch.runtime.trainer",
    "tfmatch.data",
    "tfmatch.methods",
)


class _GinPackagePathNoise(logging.Filter):
    """Drops gin's ERROR "Path not found: data/x.gin": for every ``include`` it first tries the path as a Python
    package resource and logs that error before it finds the file on the search path (``configs/``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.module == "resource_reader" and record.getMessage().startswith("Path not found"))


_NOISE_FILTER = _GinPackagePathNoise()


class ConfigError(ValueError):
    """A gin file or binding that does not parse; the message names where it came from."""


def register_all() -> None:
    """Imports every module that registers gin configurables."""
    for name in _REGISTERING_MODULES:
        importlib.import_module(name)


def resolve_gin_file(path: str) -> str:
    """Finds a gin file as given, relative to the working directory, or relative to ``configs/``."""
    candidates = [Path(path), CONFIG_ROOT / path]
    if not path.endswith(".gin"):
        candidates += [Path(path + ".gin"), CONFIG_ROOT / (path + ".gin")]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    raise ConfigError(f"gin file not found: {path!r} (looked in the working directory and in {CONFIG_ROOT})")


def _bound_parameters() -> set:
    # gin 0.5 keeps bindings in a private dict {(scope, selector): {parameter: value}}; pinned <0.6 in setup.py.
    return {(scope, selector, name) for (scope, selector), params in gin.config._CONFIG.items() for name in params}


# Keras layers and models take these through **kwargs.
_KERAS_KWARGS = {"name", "dtype", "trainable", "autocast", "input_dim", "input_shape"}


def _check_parameters(new: set, source: str) -> None:
    """Rejects bindings to parameters a configurable does not have.

    gin checks names itself only for functions without ``**kwargs``; Keras classes all take ``**kwargs``, so a
    misspelled ``ASLFeat.max_keypoint`` would otherwise pass parsing and fail (or be ignored) much later.
    """
    for scope, selector, name in sorted(new):
        configurable = gin.config._REGISTRY.get_match(selector)
        if configurable is None:
            continue
        target = configurable.wrapped
        is_class = inspect.isclass(target)
        try:
            signature = inspect.signature(target.__init__ if is_class else target)
        except (TypeError, ValueError):
            continue
        params = signature.parameters
        takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        explicit = {n for n, p in params.items() if p.kind not in (inspect.Parameter.VAR_KEYWORD,
                                                                     inspect.Parameter.VAR_POSITIONAL)}
        if not takes_kwargs or name in explicit or (is_class and name in _KERAS_KWARGS):
            continue
        known = sorted(explicit - {"self"})
        where = f"{scope}/" if scope else ""
        raise ConfigError(f"{source}: {where}{selector}.{name}: {configurable.name} has no parameter {name!r} "
                          f"(its parameters: {', '.join(known)})")


def _parse_one_file(path: str) -> None:
    before = _bound_parameters()
    try:
        gin.parse_config_file(path)
    except (ValueError, KeyError, TypeError, SyntaxError, ImportError, IOError) as err:
        raise ConfigError(f"in gin file {path}: {err}") from err
    _check_parameters(_bound_parameters() - before, f"in gin file {path}")


def _parse_one_binding(binding: str) -> None:
    before = _bound_parameters()
    try:
        gin.parse_config(binding)
    except (ValueError, KeyError, TypeError, SyntaxError, ImportError) as err:
        raise ConfigError(f"in --gin_bindings {binding!r}: {err}") from err
    _check_parameters(_bound_parameters() - before, f"in --gin_bindings {binding!r}")


def parse(
    gin_files: Sequence[str] = (),
    gin_bindings: Sequence[str] = (),
    model_dir: str | None = None,
    use_saved_config: bool = True,
    finalize: bool = True,
) -> None:
    """Clears gin and parses a run's configuration in the documented order.

    Args:
      gin_files: files given with ``--gin_file`` (paths, or paths relative to ``configs/``).
      gin_bindings: bindings given with ``--gin_bindings``.
      model_dir: the run's directory; its ``operative_config.gin`` is parsed before the files when it exists
        and ``use_saved_config`` is true (resume, export and evaluation reuse the training config this way).
      finalize: lock the config afterwards, so that a later accidental parse fails loudly.
    """
    register_all()
    if _NOISE_FILTER not in logging.getLogger().filters:
        logging.getLogger().addFilter(_NOISE_FILTER)
    gin.clear_config(clear_constants=False)
    gin.add_config_file_search_path(str(CONFIG_ROOT))
    for base in sorted(glob.glob(str(CONFIG_ROOT / "base" / "*.gin"))):
        _parse_one_file(base)
    if model_dir and use_saved_config:
        saved = os.path.join(model_dir, OPERATIVE_CONFIG)
        if os.path.isfile(saved):
            _parse_one_file(saved)
    for path in gin_files:
        _parse_one_file(resolve_gin_file(path))
    for binding in gin_bindings:
        _parse_one_binding(binding)
    if finalize:
        gin.finalize()


def write_operative_config(model_dir: str) -> str:
    """Writes ``gin.operative_config_str()`` to ``model_dir/operative_config.gin`` atomically."""
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, OPERATIVE_CONFIG)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(gin.operative_config_str())
    os.replace(tmp, path)
    return path


def has_saved_config(model_dir: str) -> bool:
    return os.path.isfile(os.path.join(model_dir, OPERATIVE_CONFIG))


def add_gin_flags() -> None:
    """Defines ``--gin_file`` and ``--gin_bindings`` (repeatable) on the absl flag set of a CLI module."""
    from absl import flags

    flags.DEFINE_multi_string("gin_file", [], "gin file (repeatable); relative paths may be relative to configs/")
    flags.DEFINE_multi_string("gin_bindings", [], "gin binding such as 'train.max_steps = 10' (repeatable)")
