"""unrolled: unrolled networks for imaging inverse problems with an O(1)-memory implicit
backward for the least-squares data step."""

# _startup first: it must act before torch is imported (see that module).
from . import _startup, data, evaluation, linalg, models, physics, testing, train, unfolded  # noqa: F401
from .fidelity import L2, SolveStats
from .linalg import CG, SolveInfo, prox_l2
from .saving import load, save

__version__ = "0.1.0"

__all__ = [
    "CG",
    "L2",
    "SolveInfo",
    "SolveStats",
    "__version__",
    "data",
    "evaluation",
    "linalg",
    "load",
    "models",
    "physics",
    "prox_l2",
    "save",
    "testing",
    "train",
    "unfolded",
]
