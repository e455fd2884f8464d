"""tfmatch: TensorFlow 2 / Keras 3 training and evaluation of learned local features."""
from setuptools import find_packages, setup

setup(
    name="tfmatch",
    version="0.1.0",
    description="One Keras 3 framework for GeoDesc, ContextDesc, ASLFeat, SuperPoint, PoSFeat, PUMP and IMP",
    packages=find_packages(include=["tfmatch", "tfmatch.*", "data_tools", "data_tools.*"]),
    include_package_data=True,
    python_requires=">=3.11,<3.13",
    install_requires=[
        "tensorflow>=2.21,<2.22",  # tf.data everywhere; the TF backend and SavedModel export
        "keras>=3.15,<4",
        "gin-config>=0.5,<0.6",
        "absl-py>=2.1",
        "h5py>=3.10,<3.15",  # TensorFlow 2.21 pins h5py<3.15
        "numpy>=1.26,<3",
        "opencv-python-headless>=4.10",  # same API as opencv-python, no GUI libraries
        "scikit-image>=0.22",  # its bundled photographs feed the synthetic data sets
        "tensorboard>=2.21,<2.22",  # TF 2.21 no longer pulls it in; Keras' TensorBoard callback needs it
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "scipy>=1.11",  # KD-trees in the synthetic GL3D generator
    ],
    extras_require={
        "jax": ["jax>=0.4.35"],
        "test": ["pytest>=8", "pytest-xdist>=3.5", "torch==2.13.0"],  # torch: SuperPoint weight-import parity only
    },
)
