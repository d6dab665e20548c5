"""Unfolded (unrolled) splitting algorithms: a fixed number of iterations of HQS, ADMM,
PGD or DRS whose denoiser and per-layer scalars are learned."""

from .admm import ADMM
from .base import Unfolded
from .builder import ALGORITHMS, build
from .drs import DRS
from .hqs import HQS
from .pgd import PGD
from .scalars import LayerScalars, ScalarSpec

__all__ = [
    "ADMM",
    "ALGORITHMS",
    "DRS",
    "HQS",
    "LayerScalars",
    "PGD",
    "ScalarSpec",
    "Unfolded",
    "build",
]
