"""One experiment from one description: the measurement, the solver, the network, and the
images they see.

``unrolled train``, ``unrolled demo``, ``unrolled eval`` and the benchmarks each turn their
own settings into an :class:`Experiment` and build from it, so an operator, a denoiser or a
solver setting means the same thing everywhere. The random state is not touched here:
a caller that wants reproducible weights seeds torch before :meth:`Experiment.build_model`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import Dataset

from ..fidelity import L2
from ..linalg.cg import CG
from ..models import ENSEMBLES, ComplexDenoiser, DnCNN, UNet
from ..physics import Physics
from ..physics.spec import COMPLEX_OPERATORS, physics_from_spec
from ..unfolded import build
from .complex_images import ComplexImages

__all__ = [
    "DENOISERS",
    "ENSEMBLE_HELP",
    "ENSEMBLE_SETTINGS",
    "Experiment",
    "complex_dtype",
    "ensemble_setting",
]

DENOISERS = ("dncnn", "unet")

#: how the commands' flags and config files name the ``ensemble`` settings ("none": None)
ENSEMBLE_SETTINGS = ("none", *ENSEMBLES)
#: what an ``ensemble`` setting does, for the commands' help
ENSEMBLE_HELP = (
    "evaluation averages each denoiser call over the quarter turns of its input "
    "('dihedral': and their mirror images); training is unchanged"
)


def ensemble_setting(text: str) -> str | None:
    """The model's ``ensemble`` for a command's setting (``"none"`` is ``None``)."""
    return None if text == "none" else text


@dataclass(frozen=True)
class Experiment:
    """An unfolded network on a measurement, as plain values.

    ``layers``, ``stepsize``, ``sigma``, ``trainable``, ``share_parameters``,
    ``share_denoiser``, ``checkpoint_layers``, ``init``, ``init_weight`` and ``ensemble``
    mean what they mean to the unfolded classes (:mod:`unrolled.unfolded`).

    Args:
        physics: the measurement, a spec from :mod:`unrolled.physics.spec`.
        channels: channels of the real images (complex images: one complex channel).
        algorithm: ``"hqs"``, ``"admm"``, ``"pgd"`` or ``"drs"``.
        denoiser: ``"dncnn"`` (``depth`` convolutions of ``features`` channels) or
            ``"unet"`` (``levels`` levels, base width ``features``).
        solver: keyword arguments of :class:`~unrolled.CG` (unset ones: CG's defaults).
        backward: the data step's backward mode.
    """

    physics: Mapping
    channels: int = 1
    algorithm: str = "hqs"
    layers: int = 5
    denoiser: str = "dncnn"
    depth: int = 7
    features: int = 32
    levels: int = 2
    stepsize: float = 1.0
    sigma: float = 0.05
    trainable: tuple[str, ...] = ("stepsize", "sigma")
    share_parameters: bool = False
    share_denoiser: bool = True
    checkpoint_layers: bool = False
    init: str = "auto"
    init_weight: float | None = None
    ensemble: str | None = None
    solver: Mapping = field(default_factory=dict)
    backward: str = "implicit"

    @property
    def operator(self) -> str:
        return self.physics["operator"]

    @property
    def is_complex(self) -> bool:
        """Whether the measurement takes complex images (MRI)."""
        return self.operator in COMPLEX_OPERATORS

    def build_physics(
        self, image_size: Sequence[int] | None = None, *, dtype: torch.dtype | None = None
    ) -> Physics:
        """The measurement, with its noise, for ``(H, W)`` images of the real ``dtype``."""
        return physics_from_spec(dict(self.physics), image_size, dtype=dtype)

    def build_solver(self) -> CG:
        return CG(**self.solver)

    def build_fidelity(self) -> L2:
        return L2(solver=self.build_solver(), backward=self.backward)

    def build_denoiser(self) -> nn.Module:
        """A fresh denoiser; for complex images a real one on (real, imaginary) channels."""
        c = 2 if self.is_complex else self.channels
        if self.denoiser == "dncnn":
            net: nn.Module = DnCNN(c, c, depth=self.depth, features=self.features)
        elif self.denoiser == "unet":
            net = UNet(c, c, base=self.features, levels=self.levels)
        else:
            raise ValueError(f"denoiser: expected one of {DENOISERS}, got {self.denoiser!r}")
        return ComplexDenoiser(net) if self.is_complex else net

    def build_model(
        self, *, denoiser: nn.Module | None = None, fidelity: nn.Module | None = None
    ) -> nn.Module:
        """The unfolded network: a fresh denoiser and data step unless given."""
        return build(
            self.algorithm,
            layers=self.layers,
            denoiser=self.build_denoiser() if denoiser is None else denoiser,
            fidelity=self.build_fidelity() if fidelity is None else fidelity,
            stepsize=self.stepsize,
            sigma=self.sigma,
            trainable=tuple(self.trainable),
            share_parameters=self.share_parameters,
            share_denoiser=self.share_denoiser,
            checkpoint_layers=self.checkpoint_layers,
            init=self.init,
            init_weight=self.init_weight,
            ensemble=self.ensemble,
        )

    def images(self, images: Dataset, seed: int) -> Dataset:
        """``images`` as this measurement takes them: complex (a grey level times a smooth
        phase drawn from ``seed``) for MRI, unchanged otherwise."""
        return ComplexImages(images, seed=seed) if self.is_complex else images


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype of the same precision as the real ``dtype``."""
    return torch.complex128 if dtype == torch.float64 else torch.complex64
