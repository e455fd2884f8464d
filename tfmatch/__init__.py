"""tfmatch: one TensorFlow 2 / Keras 3 framework for training and evaluating learned local features."""

__version__ = "0.1.0"
