"""Registers the Keras classes that recipes name (optimisers, schedules, regularisers) with gin.

``gin.external_configurable`` wraps a copy, so the Keras classes themselves stay untouched (``@gin.configurable``
on a Keras class breaks its construction; see DESIGN.md).
"""

import gin
import keras

_OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSprop", "Lion")
_SCHEDULES = ("ExponentialDecay", "PiecewiseConstantDecay", "CosineDecay", "CosineDecayRestarts", "PolynomialDecay")

for _name in _OPTIMIZERS:
    gin.external_configurable(getattr(keras.optimizers, _name), name=_name, module="keras.optimizers")
for _name in _SCHEDULES:
    gin.external_configurable(getattr(keras.optimizers.schedules, _name), name=_name,
                              module="keras.optimizers.schedules")
gin.external_configurable(keras.regularizers.L2, name="L2", module="keras.regularizers")
