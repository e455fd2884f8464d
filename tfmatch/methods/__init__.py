"""Every method package; importing this module registers their classes with gin."""

from tfmatch.methods import aslfeat  # noqa: F401
from tfmatch.methods import contextdesc  # noqa: F401
from tfmatch.methods import geodesc  # noqa: F401
from tfmatch.methods import superpoint  # noqa: F401
