"""Save a trained model as data, and rebuild it without code: ``ur.save`` / ``ur.load``.

A model file holds the model's architecture and settings as plain values (algorithm,
layers, scalars, denoiser, solver, initial estimate), its ``state_dict``, the
measurement it was trained for (a plain dict, e.g. ``{"physics": "blur",
"blur_sigma": 2.5, "noise": 0.1}``) and free-form information (how it was trained,
what it scored). It is written atomically and read with ``torch.load(weights_only=True)``:
loading never runs code from the file.

Known parts: the unfolded algorithms (:data:`unrolled.unfolded.ALGORITHMS`), the denoisers
:class:`~unrolled.models.DnCNN`, :class:`~unrolled.models.UNet` and
:class:`~unrolled.models.ComplexDenoiser` around one of them, the data term
:class:`~unrolled.L2` with :class:`~unrolled.CG` settings. Other modules are refused by
:func:`save` with a message naming them.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._validation import describe as describe_value
from .fidelity import L2
from .linalg.cg import CG
from .models import ComplexDenoiser, DnCNN, PnP, UNet
from .train.checkpoint import atomic_torch_save
from .unfolded import ALGORITHMS, Unfolded

__all__ = ["MODEL_FORMAT", "ModelFileError", "SavedModel", "describe", "load", "load_file", "save"]

MODEL_FORMAT = "unrolled.model"
MODEL_VERSION = 1


class ModelFileError(ValueError):
    """A model file that cannot be read or rebuilt; the message names the file."""


@dataclass
class SavedModel:
    """What a model file holds: the rebuilt ``model`` (in eval mode), the ``physics``
    description it was trained for and free-form ``info``."""

    model: nn.Module
    physics: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def _check_path(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {describe_value(path)}")
    return Path(path)


def _check_plain_dict(name: str, value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(
            f"{name}: expected a dict of plain values or None, got {describe_value(value)}"
        )
    return dict(value)


# -- model -> plain description ----------------------------------------------------------


def _describe_denoiser(module: nn.Module) -> dict:
    if isinstance(module, ComplexDenoiser):
        return {"type": "ComplexDenoiser", "denoiser": _describe_denoiser(module.denoiser)}
    if isinstance(module, DnCNN):
        convs = [m for m in module.net if isinstance(m, nn.Conv2d)]
        return {
            "type": "DnCNN",
            "in_channels": module.in_channels,
            "out_channels": module.out_channels,
            "depth": len(convs),
            "features": convs[0].out_channels,
            "bias": convs[0].bias is not None,
            "residual": module.residual,
        }
    if isinstance(module, UNet):
        return {
            "type": "UNet",
            "in_channels": module.in_channels,
            "out_channels": module.out_channels,
            "base": module.base,
            "levels": module.levels,
            "bias": module.last.bias is not None,
            "residual": module.residual,
        }
    raise TypeError(
        "model: expected a denoiser that can be described as data (DnCNN, UNet, "
        f"ComplexDenoiser), got {describe_value(module)}; "
        "save its state_dict with torch.save instead"
    )


def _describe_solver(solver: CG) -> dict:
    values = dataclasses.asdict(solver)
    if not (values["preconditioner"] is None or isinstance(values["preconditioner"], str)):
        raise TypeError(
            "model: expected a CG preconditioner None or 'auto' (a model file cannot hold "
            f"a callable), got {describe_value(values['preconditioner'])}"
        )
    return values


def describe(model: nn.Module) -> dict:
    """The plain description of an unfolded ``model`` that :func:`load` rebuilds it from
    (every value a str, number, bool, list or dict)."""
    if not isinstance(model, Unfolded):
        raise TypeError(f"model: expected an unfolded algorithm, got {describe_value(model)}")
    name = next((k for k, cls in ALGORITHMS.items() if type(model) is cls), None)
    if name is None:
        raise TypeError(
            f"model: expected one of the classes {[c.__name__ for c in ALGORITHMS.values()]}, "
            f"got {type(model).__name__}"
        )
    if not isinstance(model.fidelity, L2):
        raise TypeError(f"model: expected an L2 data term, got {describe_value(model.fidelity)}")
    priors = list(model.priors)
    others = [p for p in priors if not isinstance(p, PnP)]
    if others:
        raise TypeError(f"model: expected denoiser priors (PnP), got {describe_value(others[0])}")
    scalars = model.scalars
    return {
        "algorithm": name,
        "layers": model.layers,
        "scalars": {n: scalars[n].detach().cpu().double().tolist() for n in scalars.specs},
        "trainable": sorted(scalars.trainable),
        "share_parameters": sorted(scalars.shared),
        "share_denoiser": model.share_denoiser,
        "checkpoint_layers": model.checkpoint_layers,
        "init": model.init,
        "init_weight": model.init_weight,
        "ensemble": model.ensemble,
        "denoiser": _describe_denoiser(priors[0].denoiser),
        "fidelity": {
            "solver": _describe_solver(model.fidelity.solver),
            "backward": model.fidelity.backward,
        },
    }


# -- plain description -> model ----------------------------------------------------------


def _build_denoiser(spec: dict) -> nn.Module:
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind == "ComplexDenoiser":
        return ComplexDenoiser(_build_denoiser(spec["denoiser"]))
    if kind == "DnCNN":
        return DnCNN(**spec)
    if kind == "UNet":
        return UNet(**spec)
    raise ValueError(f"denoiser: expected type DnCNN, UNet or ComplexDenoiser, got {kind!r}")


def build(spec: dict) -> Unfolded:
    """The (untrained) model a :func:`describe` description stands for."""
    solver = CG(**spec["fidelity"]["solver"])
    cls = ALGORITHMS[spec["algorithm"]]
    return cls(
        layers=spec["layers"],
        denoiser=_build_denoiser(spec["denoiser"]),
        fidelity=L2(solver=solver, backward=spec["fidelity"]["backward"]),
        trainable=tuple(spec["trainable"]),
        share_parameters=tuple(spec["share_parameters"]),
        share_denoiser=spec["share_denoiser"],
        checkpoint_layers=spec["checkpoint_layers"],
        init=spec["init"],
        init_weight=spec.get("init_weight"),  # absent from files older than init="smooth"
        ensemble=spec.get("ensemble"),  # absent from files older than the ensembles
        **spec["scalars"],
    )


# -- files ---------------------------------------------------------------------------------


def save(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    physics: dict | None = None,
    info: dict | None = None,
) -> Path:
    """Write ``model`` (an unfolded algorithm of known parts) to ``path`` atomically.

    Args:
        model: the trained model.
        path: the file to write (its folder must exist).
        physics: a plain description of the measurement it was trained for.
        info: plain values to keep with it (training settings, scores).

    Returns the path written.

    Examples:
        A model written and read back: the same class, the same weights, in eval mode.

        >>> import tempfile, pathlib, torch
        >>> import unrolled as ur
        >>> _ = torch.manual_seed(0)
        >>> model = ur.unfolded.ADMM(layers=2, denoiser=ur.models.DnCNN(1, 1, depth=2))
        >>> folder = tempfile.TemporaryDirectory()
        >>> path = ur.save(
        ...     model,
        ...     pathlib.Path(folder.name) / "admm.pt",
        ...     physics={"operator": "blur", "kernel_sigma": 1.0},
        ...     info={"epochs": 0},
        ... )
        >>> loaded = ur.load(path)
        >>> type(loaded).__name__, loaded.training
        ('ADMM', False)
        >>> same = zip(loaded.state_dict().values(), model.state_dict().values())
        >>> all(torch.equal(a, b) for a, b in same)
        True
        >>> ur.saving.load_file(path).info
        {'epochs': 0}
        >>> folder.cleanup()
    """
    path = _check_path(path)
    payload = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "model": describe(model),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "physics": _check_plain_dict("physics", physics),
        "info": _check_plain_dict("info", info),
    }
    return atomic_torch_save(payload, path)


def load_file(path: str | os.PathLike, map_location: Any = "cpu") -> SavedModel:
    """Read a model file written by :func:`save`: the model (eval mode), the physics
    description and the info. Raises :class:`ModelFileError` naming the file when it is
    missing, damaged, not a model file, or holds objects that need code to load."""
    path = _check_path(path)
    if not path.is_file():
        raise ModelFileError(f"model {path}: no such file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelFileError(
            f"model {path}: refused, it holds objects that need code to load "
            f"({str(err).splitlines()[0]})"
        ) from err
    except Exception as err:  # torch raises RuntimeError/EOFError/... on damaged files
        raise ModelFileError(
            f"model {path}: damaged, cannot be read ({type(err).__name__})"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ModelFileError(
            f"model {path}: not an unrolled model file (expected format={MODEL_FORMAT!r}; "
            "a training checkpoint's model is saved as best.pt / last.pt beside it)"
        )
    if payload.get("version") != MODEL_VERSION:
        raise ModelFileError(
            f"model {path}: format version {payload.get('version')!r}, this version of "
            f"unrolled reads version {MODEL_VERSION}"
        )
    try:
        model = build(payload["model"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"model {path}: cannot be rebuilt ({err})") from err
    model.eval()
    return SavedModel(model, dict(payload.get("physics", {})), dict(payload.get("info", {})))


def load(path: str | os.PathLike, map_location: Any = "cpu") -> nn.Module:
    """The trained model in the file ``path`` (written by :func:`save`, by ``unrolled
    demo`` or by ``unrolled train``), in eval mode, called as ``model(y, physics)``.

    Examples:
        The model that ships with the package, and what it was trained for:

        >>> from importlib import resources
        >>> import unrolled as ur
        >>> path = resources.files("unrolled.weights") / "hqs_blur.pt"
        >>> model = ur.load(path)
        >>> type(model).__name__, model.layers, model.training
        ('HQS', 5, False)
        >>> ur.saving.load_file(path).physics["operator"]
        'blur'
    """
    return load_file(path, map_location).model
