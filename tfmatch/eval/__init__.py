"""Evaluation harness (numpy / OpenCV / h5py; TensorFlow only to load a SavedModel).

``io`` readers and h5 caches, ``extractors`` (SavedModel or OpenCV baseline -> features), ``matchers``,
``metrics`` (pure functions), ``pipeline`` (pass 1: cached features and matches), ``hpatches`` and ``pose``
(the protocols), ``plots``. The CLIs are ``python -m tfmatch.extract``, ``tfmatch.match``, ``tfmatch.evaluate``.
"""
