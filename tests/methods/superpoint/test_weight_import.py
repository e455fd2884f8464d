"""Weight import: the restricted unpickler (no PyTorch, no code execution) and parity with a PyTorch twin."""

import collections
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from data_tools import import_superpoint_weights as importer

torch = pytest.importorskip("torch")  # a test-only dependency (setup.py extra "test")


class TorchSuperPoint(torch.nn.Module):
    """The released Magic Leap layout (no BatchNorm), written here as the reference twin."""

    def __init__(self, c=(64, 64, 128, 128), head=256, dim=256):
        super().__init__()
        conv = lambda i, o, k=3: torch.nn.Conv2d(i, o, k, padding=k // 2)  # noqa: E731
        self.conv1a, self.conv1b = conv(1, c[0]), conv(c[0], c[0])
        self.conv2a, self.conv2b = conv(c[0], c[1]), conv(c[1], c[1])
        self.conv3a, self.conv3b = conv(c[1], c[2]), conv(c[2], c[2])
        self.conv4a, self.conv4b = conv(c[2], c[3]), conv(c[3], c[3])
        self.convPa, self.convPb = conv(c[3], head), conv(head, 65, 1)
        self.convDa, self.convDb = conv(c[3], head), conv(head, dim, 1)

    def forward(self, x):
        relu, pool = torch.relu, torch.nn.functional.max_pool2d
        x = pool(relu(self.conv1b(relu(self.conv1a(x)))), 2)
        x = pool(relu(self.conv2b(relu(self.conv2a(x)))), 2)
        x = pool(relu(self.conv3b(relu(self.conv3a(x)))), 2)
        x = relu(self.conv4b(relu(self.conv4a(x))))
        semi = self.convPb(relu(self.convPa(x)))
        desc = self.convDb(relu(self.convDa(x)))
        return semi, torch.nn.functional.normalize(desc, dim=1)


@pytest.mark.parametrize("legacy", [False, True])
def test_reads_state_dict_without_torch_including_views(tmp_path, legacy):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = collections.OrderedDict(a=base, b=base[:, 1], c=base.t(), d=torch.tensor([1, 2], dtype=torch.int64))
    path = str(tmp_path / "w.pth")
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    loaded = importer.load_state_dict(path)
    assert list(loaded) == ["a", "b", "c", "d"]
    for key in state:
        np.testing.assert_array_equal(loaded[key], state[key].numpy())
    assert loaded["d"].dtype == np.int64


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"conv1a.weight": _Evil(marker)}, protocol=2)
    # Sanity: the payload really runs code under the ordinary unpickler.
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()
    # As a legacy file and inside a PyTorch zip: refused, nothing runs.
    legacy = tmp_path / "evil_legacy.pth"
    legacy.write_bytes(payload)
    zipped = tmp_path / "evil_zip.pth"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/version", "3\n")
    for path in (legacy, zipped):
        with pytest.raises(importer.UnsafePickleError, match="refusing to load global"):
            importer.load_state_dict(str(path))
        assert not marker.exists()


def test_legacy_header_with_evil_global_is_refused(tmp_path):
    buffer = io.BytesIO()
    pickle.dump(importer._LEGACY_MAGIC, buffer, protocol=2)
    pickle.dump(1001, buffer, protocol=2)
    pickle.dump({"protocol_version": 1001}, buffer, protocol=2)
    pickle.dump(_Evil(tmp_path / "pwned"), buffer, protocol=2)
    path = tmp_path / "evil.pth"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(importer.UnsafePickleError):
        importer.load_state_dict(str(path))
    assert not (tmp_path / "pwned").exists()


def test_wrong_layout_names_the_missing_key(tmp_path):
    path = str(tmp_path / "other.pth")
    torch.save({"encoder.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(KeyError, match="conv1a.weight"):
        importer.magicleap_to_keras(importer.load_state_dict(path), path)


def test_parity_with_pytorch_twin(tmp_path):
    from keras import ops

    from tfmatch.layers.keypoints import sample_descriptors
    from tfmatch.methods.superpoint.network import logits_to_heatmap
    from tfmatch.runtime import checkpoints

    torch.manual_seed(0)
    twin = TorchSuperPoint().eval()
    pth = str(tmp_path / "superpoint_v1.pth")
    torch.save(twin.state_dict(), pth)
    out = str(tmp_path / "model_dir")
    importer.import_weights(pth, out, max_keypoints=64, detection_threshold=0.0)

    model = checkpoints.load_model(out)  # through the operative config and the checkpoint, as export does
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 48, 64, 1)).astype(np.float32)
    with torch.no_grad():
        semi, desc = twin(torch.from_numpy(images.transpose(0, 3, 1, 2) / 255.0))
    semi = semi.numpy().transpose(0, 2, 3, 1)
    desc = desc.numpy().transpose(0, 2, 3, 1)

    outputs = model.run_network(images)
    np.testing.assert_allclose(np.asarray(outputs["logits"]), semi, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(outputs["descriptors"]), desc, atol=1e-4)

    # Keypoints and descriptors from the twin's raw outputs through the same decode equal extract().
    extracted = {k: np.asarray(v) for k, v in model.extract(images).items()}
    keypoints, scores, valid = (np.asarray(t) for t in model.detect(logits_to_heatmap(ops.convert_to_tensor(semi))))
    assert valid.sum() > 50
    np.testing.assert_array_equal(extracted["valid"], valid)
    np.testing.assert_allclose(extracted["scores"], scores, atol=1e-5)
    same = np.all(extracted["keypoints"] == keypoints, axis=-1)
    assert same.mean() > 0.95  # near-equal scores may swap places in the ranking
    twin_desc = np.asarray(sample_descriptors(desc, keypoints, 8, convention="centre"))
    np.testing.assert_allclose(extracted["descriptors"][same], twin_desc[same], atol=1e-4)


def test_imported_model_dir_exports_a_savedmodel(tmp_path):
    import tensorflow as tf

    from tfmatch.export import export
    from tfmatch.runtime import checkpoints

    torch.manual_seed(1)
    pth = str(tmp_path / "superpoint_v1.pth")
    torch.save(TorchSuperPoint().state_dict(), pth)
    model_dir = str(tmp_path / "model_dir")
    importer.import_weights(pth, model_dir, max_keypoints=32, detection_threshold=0.0)
    out = export(model_dir, jit_compile="false")
    images = np.random.default_rng(2).uniform(0, 255, (2, 40, 48, 1)).astype(np.float32)  # another size
    loaded = tf.saved_model.load(out)  # keep a reference: its variables die with it
    got = loaded.extract(tf.constant(images))
    expected = checkpoints.load_model(model_dir).extract(images)
    assert set(got) == {"keypoints", "scores", "descriptors", "valid"}
    for key in ("keypoints", "valid"):
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(expected[key]))
    np.testing.assert_allclose(np.asarray(got["descriptors"]), np.asarray(expected["descriptors"]), atol=1e-5)
    assert os.path.isfile(os.path.join(out, "metadata.json"))
