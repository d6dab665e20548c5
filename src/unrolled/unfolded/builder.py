"""Build an unfolded algorithm by name."""

from __future__ import annotations

from .._validation import describe
from .admm import ADMM
from .base import Unfolded
from .drs import DRS
from .hqs import HQS
from .pgd import PGD

__all__ = ["ALGORITHMS", "build"]

ALGORITHMS: dict[str, type[Unfolded]] = {"hqs": HQS, "admm": ADMM, "pgd": PGD, "drs": DRS}


def build(algorithm: str = "hqs", **kwargs) -> Unfolded:
    """``build("admm", layers=5, denoiser=..., ...)`` is ``ADMM(layers=5, denoiser=..., ...)``.

    ``algorithm`` is one of ``"hqs"``, ``"admm"``, ``"pgd"``, ``"drs"`` (any case); the
    keyword arguments go to the class.
    """
    names = tuple(ALGORITHMS)
    if not isinstance(algorithm, str):
        raise TypeError(f"algorithm: expected one of {names}, got {describe(algorithm)}")
    if algorithm.lower() not in ALGORITHMS:
        raise ValueError(f"algorithm: expected one of {names} (any case), got {algorithm!r}")
    return ALGORITHMS[algorithm.lower()](**kwargs)
