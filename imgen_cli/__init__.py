"""imgen: enhance images with generative models, one plugin per task.

Plugin authors need only what is exported here; importing it is cheap (no torch, no numpy).
"""

from .contract import Command, ImageInput, Model, Tiling
from .hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["Command", "ImageInput", "Model", "Tiling", "hookimpl", "__version__"]
