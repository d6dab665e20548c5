"""unrolled: unrolled networks for imaging inverse problems with an O(1)-memory implicit
backward for the least-squares data step."""

# _startup first: it must act before torch is imported (see that module).
from . import _startup, data, linalg, models, physics, train, unfolded  # noqa: F401
from .fidelity import L2, SolveStats
from .linalg import CG, SolveInfo, prox_l2

__version__ = "0.1.0"

__all__ = [
    "CG",
    "L2",
    "SolveInfo",
    "SolveStats",
    "__version__",
    "data",
    "linalg",
    "models",
    "physics",
    "prox_l2",
    "train",
    "unfolded",
]
