"""ASLFeat (two stages, deformable convolutions): network, losses, the method class, gin registration.

Recipes: ``configs/methods/aslfeat/base.gin`` (stage 1) and ``dcn.gin`` (stage 2); ``train.model_fn = @ASLFeat``.
"""

import gin

from tfmatch.methods.aslfeat import losses  # noqa: F401
from tfmatch.methods.aslfeat.model import ASLFeat
from tfmatch.methods.aslfeat.network import ASLFeatNet

gin.register(ASLFeat, module="aslfeat")

__all__ = ["ASLFeat", "ASLFeatNet"]
