"""SuperPoint and MagicPoint (DeTone et al. 2018): network, losses, models; importing registers them with gin.

Recipes say ``train.model_fn = @MagicPoint`` or ``train.model_fn = @SuperPoint``.
"""

import gin

from tfmatch.methods.superpoint.model import MagicPoint, SuperPoint

gin.register(MagicPoint, module="superpoint")
gin.register(SuperPoint, module="superpoint")

__all__ = ["MagicPoint", "SuperPoint"]
