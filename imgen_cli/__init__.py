"""imgen: enhance images with generative models, one plugin per command.

Plugin authors need only what is exported here; importing it is cheap (no torch, no numpy).
"""

from .contract import Command, Context, ImageInput, Loaded, Model, Tiling
from .errors import InputError, PluginError, UsageError
from .filters import gaussian_blur, gaussian_radius, resize
from .hookspecs import hookimpl

__version__ = "0.2.0"

__all__ = ["Command", "Context", "ImageInput", "InputError", "Loaded", "Model", "PluginError", "Tiling", "UsageError",
           "gaussian_blur", "gaussian_radius", "hookimpl", "resize", "__version__"]
