"""blindinpaint: blind image restoration (HCL) and mask-given inpainting (GDN).

Mask convention at every public boundary: 1 / white = corrupted (hole), 0 / black = valid.
"""

__version__ = "0.1.0"

from .errors import ConfigError, UserError  # noqa: E402

__all__ = ["__version__", "UserError", "ConfigError"]
