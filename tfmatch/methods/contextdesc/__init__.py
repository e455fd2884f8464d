"""ContextDesc (Luo et al., CVPR 2019): GeoDesc patches + visual context (regional features) + geometric context.

Importing this package registers ``ContextDesc`` with gin (``train.model_fn = @ContextDesc``).
"""

import gin

from tfmatch.methods.contextdesc.model import ContextDesc
from tfmatch.methods.contextdesc.network import build_regional_trunk, preprocess_regional

gin.register(ContextDesc, module="contextdesc")

__all__ = ["ContextDesc", "build_regional_trunk", "preprocess_regional"]
