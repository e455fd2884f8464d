r"""Converts the Magic Leap SuperPoint PyTorch weights (``superpoint_v1.pth``) into a tfmatch ``model_dir``.

    python -m data_tools.import_superpoint_weights --pth superpoint_v1.pth --out ckpt/superpoint_magicleap

The file is read **without PyTorch**, through a restricted unpickler that accepts only what a state dict of tensors
needs (``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the ``torch.*Storage`` type markers,
all mapped to our own NumPy code); any other global in the pickle (``os.system``, ``builtins.eval``, a
``torch.nn`` module, ...) is refused before it is called, so a malicious file cannot run code. Both the zip format
(PyTorch >= 1.6) and the legacy format (the 2018 Magic Leap file) are read.

The ``model_dir`` gets ``operative_config.gin`` (``train.model_fn = @SuperPoint`` with the network of the released
file: no BatchNorm) and ``checkpoints/ckpt-00000000.h5``, so ``python -m tfmatch.export --model_dir DIR`` and the
evaluation treat it like a trained run. Conv kernels go from PyTorch OIHW to Keras HWIO; the detector channels need
no reordering (depth-to-space uses the same layout in both frameworks).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

# torch storage type name -> NumPy dtype.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": None,  # no NumPy dtype; converted by hand below
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
# The layer names of the released network (SuperPointNet in demo_superpoint.py / SuperGlue's superpoint.py).
MAGICLEAP_LAYERS = ("conv1a", "conv1b", "conv2a", "conv2b", "conv3a", "conv3b", "conv4a", "conv4b",
                    "convPa", "convPb", "convDa", "convDb")


class UnsafePickleError(pickle.UnpicklingError):
    """The file asks for something a tensor state dict never needs."""


class _StorageType:
    def __init__(self, name):
        self.name = name


class _Storage:
    """A storage record; its bytes arrive from the zip member or, in the legacy format, after the main pickle."""

    def __init__(self, key, type_name, numel):
        self.key, self.type_name, self.numel = str(key), type_name, numel
        self.array = None


class _LazyTensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def resolve(self, path):
        data = self.storage.array
        if data is None:
            raise pickle.UnpicklingError(f"{path}: storage {self.storage.key} has no data")
        itemsize = data.dtype.itemsize
        needed = self.offset + 1 + sum((s - 1) * st for s, st in zip(self.size, self.stride))  # last element + 1
        if any(s == 0 for s in self.size):
            return np.zeros(self.size, data.dtype)
        if needed > data.size or self.offset < 0 or min(self.stride, default=0) < 0:
            raise pickle.UnpicklingError(f"{path}: tensor view (offset {self.offset}, size {self.size}, stride "
                                         f"{self.stride}) exceeds its storage of {data.size} elements")
        view = np.lib.stride_tricks.as_strided(data[self.offset:], self.size, [s * itemsize for s in self.stride])
        return np.array(view)  # a copy, detached from the storage buffer


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    if not isinstance(storage, _Storage):
        raise UnsafePickleError("a tensor record does not reference a storage")
    return _LazyTensor(storage, storage_offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of a tensor state dict, to our own stand-ins; everything else is refused."""

    def __init__(self, file, path, storage_loader=None):
        super().__init__(file)
        self.path = path
        self.storage_loader = storage_loader
        self.storages = {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(f"{self.path}: refusing to load global {module}.{name}: only tensor records are "
                                "accepted (is this a SuperPoint state dict?)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise UnsafePickleError(f"{self.path}: unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        storage = self.storages.get(str(key))
        if storage is None:
            storage = _Storage(key, storage_type.name, numel)
            if self.storage_loader is not None:
                storage.array = self.storage_loader(storage)
            self.storages[storage.key] = storage
        return storage


def _as_dtype(raw: bytes, type_name: str, path: str):
    dtype = _STORAGE_DTYPES[type_name]
    if dtype is None:  # bfloat16: the high half of a float32
        return (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
    if len(raw) % np.dtype(dtype).itemsize:
        raise pickle.UnpicklingError(f"{path}: storage of {len(raw)} bytes is not a whole number of {type_name}")
    return np.frombuffer(raw, dtype)


def _resolve(obj, path):
    if isinstance(obj, _LazyTensor):
        return obj.resolve(path)
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _resolve(v, path)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v, path) for v in obj)
    return obj


def _load_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise pickle.UnpicklingError(f"{path}: expected one data.pkl in the zip, found {pickles}")
        prefix = pickles[0][: -len("data.pkl")]

        def load_storage(storage):
            member = f"{prefix}data/{storage.key}"
            try:
                raw = archive.read(member)
            except KeyError:
                raise pickle.UnpicklingError(f"{path}: missing storage {member}") from None
            return _as_dtype(raw, storage.type_name, path)

        unpickler = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), path, load_storage)
        return _resolve(unpickler.load(), path)


def _load_legacy(path):
    with open(path, "rb") as f:
        header = _RestrictedUnpickler(f, path)
        magic = header.load()
        if magic != _LEGACY_MAGIC:
            raise pickle.UnpicklingError(f"{path}: neither a zip nor a legacy PyTorch file (magic {magic!r})")
        header.load()  # protocol version
        header.load()  # sys_info
        unpickler = _RestrictedUnpickler(f, path)
        result = unpickler.load()
        keys = _RestrictedUnpickler(f, path).load()
        if not isinstance(keys, list):
            raise pickle.UnpicklingError(f"{path}: malformed storage key list")
        for key in keys:
            storage = unpickler.storages.get(str(key))
            if storage is None:
                raise pickle.UnpicklingError(f"{path}: storage {key} is not referenced by the state dict")
            (count,) = struct.unpack("<q", f.read(8))
            itemsize = 2 if _STORAGE_DTYPES[storage.type_name] is None else np.dtype(
                _STORAGE_DTYPES[storage.type_name]).itemsize
            raw = f.read(count * itemsize)
            if len(raw) != count * itemsize:
                raise pickle.UnpicklingError(f"{path}: storage {key} is truncated ({len(raw)} of "
                                             f"{count * itemsize} bytes)")
            storage.array = _as_dtype(raw, storage.type_name, path)
        return _resolve(result, path)


def load_state_dict(path: str) -> dict:
    """Reads a PyTorch state dict (zip or legacy format) as ``{name: np.ndarray}``, without PyTorch and without
    running any code from the file. Raises ``UnsafePickleError`` for anything but tensor records."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    state = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
    for key in ("state_dict", "model_state_dict"):  # training checkpoints wrap the state dict
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise pickle.UnpicklingError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def magicleap_to_keras(state: dict, path: str = "state dict") -> dict:
    """Maps the Magic Leap names to ``{"conv1a": (kernel HWIO, bias), ...}``; names may carry a ``module.`` prefix."""
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    weights = {}
    for name in MAGICLEAP_LAYERS:
        try:
            kernel, bias = state[f"{name}.weight"], state[f"{name}.bias"]
        except KeyError as err:
            raise KeyError(f"{path}: missing {err.args[0]}; this is not the Magic Leap SuperPoint layout "
                           f"(keys: {sorted(state)[:8]} ...)") from None
        weights[name] = (np.transpose(np.asarray(kernel, np.float32), (2, 3, 1, 0)), np.asarray(bias, np.float32))
    extra = sorted(set(state) - {f"{n}.{p}" for n in MAGICLEAP_LAYERS for p in ("weight", "bias")})
    if extra:
        raise KeyError(f"{path}: unexpected entries {extra[:8]}: only the no-BatchNorm Magic Leap network is supported")
    return weights


OPERATIVE_CONFIG = """# Written by data_tools.import_superpoint_weights from {source}
train.model_fn = @SuperPoint
SuperPoint.encoder_channels = {encoder}
SuperPoint.head_channels = {head}
SuperPoint.descriptor_dim = {dim}
SuperPoint.batch_norm = None
SuperPoint.max_keypoints = {max_keypoints}
SuperPoint.nms_radius = {nms_radius}
SuperPoint.detection_threshold = {threshold}
"""


def import_weights(pth: str, out: str, max_keypoints: int = 1000, nms_radius: int = 4,
                   detection_threshold: float = 0.005):
    """Converts ``pth`` into the model_dir ``out``; returns the built SuperPoint model with the weights."""
    from tfmatch import config
    from tfmatch.methods.superpoint import SuperPoint
    from tfmatch.runtime import checkpoints

    weights = magicleap_to_keras(load_state_dict(pth), pth)
    encoder = [int(weights[n][0].shape[-1]) for n in ("conv1a", "conv2a", "conv3a", "conv4a")]
    head, dim = int(weights["convPa"][0].shape[-1]), int(weights["convDb"][0].shape[-1])
    model = SuperPoint(encoder_channels=encoder, head_channels=head, descriptor_dim=dim, batch_norm=None,
                       max_keypoints=max_keypoints, nms_radius=nms_radius, detection_threshold=detection_threshold)
    model.build_for_inference()
    layers = {layer.name: layer for layer in model.net.encoder + [model.net.conv_pa, model.net.conv_pb,
                                                                  model.net.conv_da, model.net.conv_db]}
    for name, (kernel, bias) in weights.items():
        conv = layers[name].conv
        if tuple(conv.kernel.shape) != kernel.shape:
            raise ValueError(f"{pth}: {name} kernel has shape {kernel.shape}, the network expects {conv.kernel.shape}")
        conv.kernel.assign(kernel)
        conv.bias.assign(bias)
    os.makedirs(out, exist_ok=True)
    checkpoints.save(out, model, step=0)
    text = OPERATIVE_CONFIG.format(source=os.path.basename(pth), encoder=tuple(encoder), head=head, dim=dim,
                                   max_keypoints=max_keypoints, nms_radius=nms_radius, threshold=detection_threshold)
    target = os.path.join(out, config.OPERATIVE_CONFIG)
    with open(target + ".tmp", "w") as f:
        f.write(text)
    os.replace(target + ".tmp", target)
    return model


def main(argv):
    del argv
    from absl import flags

    FLAGS = flags.FLAGS
    model = import_weights(FLAGS.pth, FLAGS.out, FLAGS.max_keypoints, FLAGS.nms_radius, FLAGS.detection_threshold)
    print(f"wrote {FLAGS.out} ({model.count_params()} parameters)")


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("pth", None, "PyTorch state dict of the Magic Leap network (superpoint_v1.pth)")
    flags.DEFINE_string("out", None, "model_dir to write")
    flags.DEFINE_integer("max_keypoints", 1000, "keypoints per image of the exported model")
    flags.DEFINE_integer("nms_radius", 4, "NMS radius in pixels")
    flags.DEFINE_float("detection_threshold", 0.005, "heatmap threshold")
    flags.mark_flags_as_required(["pth", "out"])
    app.run(main)
