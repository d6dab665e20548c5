"""Importing an optional library, with an install hint when it is missing.

deepinv imports torchvision. The torchvision wheel that matches a torch version on the
package index is built for CUDA; next to a CPU build of the same torch its compiled
operators do not load, and torchvision's import stops at registering the fake kernel of
``torchvision::nms``. :func:`import_deepinv` then declares the schemas of the two
operators torchvision registers at import (no kernels) and imports again: deepinv's
physics and optimisation code never call them, and torchvision's detection operators
stay unusable in that process (a warning says so).
"""

from __future__ import annotations

import importlib
import sys
import warnings

import torch

__all__ = ["import_deepinv", "INSTALL_HINT"]

INSTALL_HINT = (
    "install the extra next to your torch, pinning the torchvision built for it so that "
    'pip keeps your torch, e.g. pip install "torch==2.13.0" "torchvision==0.28.0" '
    '"unrolled[deepinv]"'
)

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
)
_declared = None  # kept alive: dropping a torch.library.Library removes its operators


def import_deepinv():
    """``import deepinv``; ``ImportError`` with an install hint when it cannot be imported."""
    global _declared
    try:
        return importlib.import_module("deepinv")
    except ImportError as err:
        raise ImportError(
            f"unrolled.interop.deepinv needs deepinv: {INSTALL_HINT} ({err})"
        ) from err
    except RuntimeError as err:
        if "torchvision::" not in str(err) or _declared is not None:
            raise
        first = err
    # A CUDA torchvision next to a CPU torch (see the module docstring).
    for name in [n for n in sys.modules if n.split(".")[0] in ("torchvision", "deepinv")]:
        del sys.modules[name]
    _declared = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _declared.define(schema)
    warnings.warn(
        f"torchvision's compiled operators do not load with this torch build ({first}); "
        "deepinv is imported without them and torchvision's detection operators are "
        "unusable in this process. A torchvision wheel built for this very torch (for a "
        "CPU torch, the '+cpu' wheel of PyTorch's CPU wheel index) avoids this",
        RuntimeWarning,
        stacklevel=3,
    )
    return importlib.import_module("deepinv")
