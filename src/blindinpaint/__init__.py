"""blindinpaint: blind image restoration (HCL) and mask-given inpainting (GDN).

Mask convention at every public boundary: 1 / white = corrupted (hole), 0 / black = valid.
"""

__version__ = "0.1.0"

from .errors import ConfigError, UserError  # noqa: E402

# The public API (blindinpaint/api.py) is imported on first use, so ``import blindinpaint`` and
# ``blindinpaint --help`` stay fast (torch loads only when a model is needed).
_API = ("Restorer", "RestoreResult", "DetectResult", "load_model", "detect", "restore", "inpaint",
        "inspect")

__all__ = ["__version__", "UserError", "ConfigError", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'blindinpaint' has no attribute {name!r}")
