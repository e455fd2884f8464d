"""GeoDesc (Luo et al., ECCV 2018): patch descriptor on SIFT keypoints, trained on GL3D patch pairs.

Importing this package registers ``GeoDesc`` with gin (``train.model_fn = @GeoDesc``, ``GeoDesc.loss_type``).
"""

import gin

from tfmatch.methods.geodesc.model import GeoDesc
from tfmatch.methods.geodesc.network import GeoDescTower

gin.register(GeoDesc, module="geodesc")

__all__ = ["GeoDesc", "GeoDescTower"]
