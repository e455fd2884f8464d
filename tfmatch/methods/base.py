"""The base class of every trainable method: loss terms as metrics, the inference contract, export metadata.

A method is a ``keras.Model`` whose ``call(batch, training)`` returns predictions and whose loss is computed in
``compute_loss`` from the batch and the predictions (backend-agnostic, so ``fit`` works on TensorFlow, JAX and
PyTorch). Subclasses implement ``loss_terms`` (already weighted), and ``extract`` or ``describe`` for inference.
"""

from __future__ import annotations

import keras
from keras import ops
# Under tf.distribute every replica's loss is scaled by 1/replicas before gradients are summed; Keras' own
# compute_loss does this, so an override must too. (A no-op on JAX and PyTorch; imports TF only on that backend.)
from keras.src.losses.loss import scale_loss_for_distribution

import tfmatch


class Method(keras.Model):
    """Base class; see ``docs/developing.md`` for the contract.

    Class attributes a subclass sets:
      loss_term_names: names of the (weighted) terms ``loss_terms`` returns; each is reported as a metric.
      endpoint: ``"extract"`` (images -> keypoints, scores, descriptors, valid), ``"describe"`` (images and
        external keypoints -> descriptors, for patch descriptors fed by SIFT) or ``"match"``.
      input_channels: channels of the inference input (1 = grayscale).
    """

    loss_term_names: tuple[str, ...] = ()
    endpoint: str = "extract"
    input_channels: int = 1

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.term_trackers = [keras.metrics.Mean(name=name) for name in self.loss_term_names]

    # ----------------------------------------------------------------------------------------------------------
    # Training
    def loss_terms(self, batch, predictions, training: bool = True) -> dict:
        """Returns ``{name: scalar}`` for every name in ``loss_term_names``; the total loss is their sum."""
        raise NotImplementedError

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        terms = self.loss_terms(x, y_pred, training=training)
        missing = set(self.loss_term_names) - set(terms)
        if missing:
            raise ValueError(f"{type(self).__name__}.loss_terms did not return {sorted(missing)}")
        total = ops.convert_to_tensor(0.0)
        for tracker in self.term_trackers:
            value = ops.cast(terms[tracker.name], "float32")
            tracker.update_state(value)
            total = total + value
        if self.losses:  # weight decay from kernel regularisers
            total = total + ops.sum(ops.stack([ops.cast(l, "float32") for l in self.losses]))
        return scale_loss_for_distribution(total)

    # ----------------------------------------------------------------------------------------------------------
    # Inference
    def extract(self, images):
        """``images [B, H, W, C] float32 in 0..255`` -> dict ``keypoints [B,N,2]`` (x, y; integer = pixel
        centre), ``scores [B,N]``, ``descriptors [B,N,D]`` (L2-normalised), ``valid [B,N] bool``."""
        raise NotImplementedError(f"{type(self).__name__} has no extract endpoint")

    def describe(self, images, keypoints):
        """``images [B,H,W,C]`` and ``keypoints [B,N,4]`` = (x, y, size, angle) as OpenCV ``KeyPoint`` gives
        them (size: diameter in pixels; angle: degrees) -> dict ``descriptors [B,N,D]`` (L2-normalised)."""
        raise NotImplementedError(f"{type(self).__name__} has no describe endpoint")

    def build_for_inference(self, height: int = 64, width: int = 64) -> None:
        """Creates every variable the inference endpoint uses (before weights are restored)."""
        images = ops.zeros((1, height, width, self.input_channels), "float32")
        if self.endpoint == "describe":
            keypoints = ops.convert_to_tensor([[[width / 2, height / 2, 8.0, 0.0]]], "float32")
            self.describe(images, keypoints)
        else:
            self.extract(images)
        self.built = True  # only __call__ marks a model built; export needs the flag

    def export_metadata(self) -> dict:
        """What an evaluator needs to know besides the SavedModel signature (extended by subclasses)."""
        return {
            "method": type(self).__name__,
            "tfmatch_version": tfmatch.__version__,
            "endpoint": self.endpoint,
            "input": {"channels": self.input_channels, "dtype": "float32", "range": [0.0, 255.0],
                      "normalisation": "done inside the model"},
            "keypoint_convention": "x, y in input-image pixels; integer coordinates are pixel centres",
        }

    # ----------------------------------------------------------------------------------------------------------
    # Visualisation (optional): fed to the MatchImages callback every few hundred steps.
    def visualization(self, batch, predictions) -> dict | None:
        """Returns ``None`` or a dict of numpy arrays for ``tfmatch.runtime.visualize.draw_matches``:
        ``image0, image1 [B,H,W] or [B,H,W,1]`` (0..255), ``keypoints0, keypoints1 [B,N,2]`` (x, y) and
        ``correct [B,N] bool`` (row i of keypoints0 matches row i of keypoints1)."""
        return None
