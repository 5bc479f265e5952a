"""mateffnet: two-stream (RGB + optical flow) action recognition with MAT-EffNet.

Importing the package is cheap: torch-heavy modules load on first use of the names below.
"""

__version__ = "0.1.0"

_LAZY = {
    "StreamNet": "mateffnet.models",
    "TwoStreamNet": "mateffnet.models",
    "StreamConfig": "mateffnet.models",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mateffnet' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
