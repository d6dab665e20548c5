"""Trained models that ship with the package, and how to find one for a configuration.

Each file here was written by a command in the repository (its ``info`` says which, on
what data, and how long it ran); ``unrolled demo`` fine-tunes the one that matches its
configuration instead of starting from random weights, and says so.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..saving import ModelFileError, describe, load_file

__all__ = ["SHIPPED", "find_shipped"]

#: the files this package ships
SHIPPED = ("hqs_blur.pt",)

# What must agree between a shipped model and the one asked for (the solver settings and the
# backward mode may differ: they do not change what the weights mean).
_MODEL_KEYS = (
    "algorithm",
    "layers",
    "denoiser",
    "init",
    "init_weight",
    "share_denoiser",
    "share_parameters",
)


def _path(name: str) -> Path:
    return Path(str(resources.files(__package__).joinpath(name)))


def find_shipped(model_description: dict, physics: dict) -> Path | None:
    """The shipped model file trained for the same architecture and measurement, or None.

    Args:
        model_description: :func:`unrolled.saving.describe` of the model asked for.
        physics: the physics spec it will be used with (:mod:`unrolled.physics.spec`).
    """
    for name in SHIPPED:
        path = _path(name)
        if not path.is_file():
            continue
        try:
            saved = load_file(path)
        except ModelFileError:
            continue
        shipped = describe(saved.model)
        if saved.physics == physics and all(
            shipped[k] == model_description[k] for k in _MODEL_KEYS
        ):
            return path
    return None
