"""tf.data pipelines and readers. Importing this package registers every dataset function with gin."""

from tfmatch.data import gl3d, gl3d_io  # noqa: F401  GL3D match sets: gl3d_dense_dataset
from tfmatch.data import gl3d_patches  # noqa: F401  GeoDesc / ContextDesc patches: gl3d_patch_dataset
from tfmatch.data import image_folder, synthetic_shapes  # noqa: F401  SuperPoint / MagicPoint
