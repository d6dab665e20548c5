"""The common machinery of unfolded algorithms: layers, scalars, denoisers, checkpointing."""

from __future__ import annotations

import abc
import copy
import inspect
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .._validation import check_bool, check_int, describe
from ..fidelity import L2
from ..linalg.operator import LinearOperator
from ..models.ensemble import ENSEMBLES, ensemble_average
from ..models.pnp import PnP
from ..physics.initial import check_initial_estimate, initial_estimate
from .scalars import LayerScalars, ScalarSpec

__all__ = ["Unfolded"]

State = tuple[Tensor, ...]


class _ConstructorSignature:
    """``inspect.signature(cls)`` (and so ``help(cls)``) with one keyword per declared
    scalar, in place of the ``**scalars`` the constructor really takes. Only on the class:
    an instance's signature is its ``forward``'s, so the instance gets an AttributeError,
    which makes ``inspect`` look further."""

    def __get__(self, instance, owner):
        if instance is not None:
            raise AttributeError("__signature__")
        # annotations as objects, not strings: the docs then link each to its one class
        base = inspect.signature(Unfolded.__init__, eval_str=True)
        params = [
            p
            for name, p in base.parameters.items()
            if name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        at = [p.name for p in params].index("trainable")
        scalars = [
            inspect.Parameter(
                spec.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=spec.default,
                annotation=float | Sequence[float],
            )
            for spec in owner.SCALARS
        ]
        return base.replace(parameters=params[:at] + scalars + params[at:])


class Unfolded(nn.Module, metaclass=abc.ABCMeta):
    """Base class: ``layers`` iterations of a splitting algorithm with learned parts.

    A subclass implements :meth:`layer` (one iteration ``state -> state``; a class
    without it cannot be built), and where its state is more than the iterate,
    :meth:`init_state` (the state before the first layer, from the initial estimate) and
    :meth:`estimate` (the output read from a state). It declares the scalars beyond
    ``stepsize`` and ``sigma`` by extending ``SCALARS``; each becomes a constructor
    keyword with its declared default, e.g. ::

        SCALARS = (*Unfolded.SCALARS, ScalarSpec("beta", 1.0))

    Args:
        layers: number of iterations, ``>= 1``.
        denoiser: an ``nn.Module`` called as ``denoiser(x, sigma)``, wrapped in a
            :class:`~unrolled.models.PnP`; give this or ``prior``.
        prior: a prior with ``prox(x, sigma)`` (an ``nn.Module``).
        fidelity: the data term (default ``L2()``): its ``prox`` is the data step.
        **scalars: the initial value of each scalar in ``SCALARS``, by its name (e.g.
            ``stepsize=1.0, sigma=0.01``): a number or one per layer; a scalar not given
            starts at its declared default.
        trainable: names of the trainable scalars (``True``: all, ``False``/``()``: none).
            The others are fixed buffers.
        share_parameters: ``True`` (or a collection of names): one value for all layers
            instead of one per layer.
        share_denoiser: one prior (denoiser) for all layers; ``False`` gives each layer its
            own deep copy of the one given, all starting from the same weights.
        checkpoint_layers: recompute each layer during backward
            (``torch.utils.checkpoint``, non-reentrant): activation memory is one layer's
            instead of all layers', for about one more forward pass of compute. The
            data-step solves run again too, and ``fidelity.stats`` counts them.
        init: the initial estimate when ``forward`` gets no ``x0``: ``"auto"`` (default:
            ``A^H y / A^H 1`` for blur, downsampling and inpainting, ``A^H y`` otherwise),
            ``"adjoint"``, ``"normalized_adjoint"`` or ``"smooth"`` (least squares with
            a smoothness penalty of weight ``init_weight``); see
            :func:`~unrolled.physics.initial_estimate`. Part of the model, so a saved
            model reproduces its outputs from ``model(y, physics)`` alone.
        init_weight: the smoothness weight of ``init="smooth"`` (a number > 0); ``None``
            for the other initial estimates.
        ensemble: ``None`` (default), ``"rotations"`` or ``"dihedral"``: in evaluation
            mode (``model.eval()``) every denoiser call averages the denoiser over the
            four quarter turns of its input (or those and their mirror images, eight),
            each turned back (:func:`~unrolled.models.ensemble_average`). Training mode
            calls the denoiser once, so training costs what it did; evaluation costs 4 or
            8 denoiser passes per layer. Part of the model, like ``init``.
    """

    #: the per-layer scalars: every algorithm has a data step size and a denoiser level
    SCALARS: tuple[ScalarSpec, ...] = (ScalarSpec("stepsize", 1.0), ScalarSpec("sigma", 0.01))

    __signature__ = _ConstructorSignature()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A bad declaration fails when the class is written, not when a user builds it.
        specs = cls.SCALARS
        if not (isinstance(specs, tuple) and all(isinstance(s, ScalarSpec) for s in specs)):
            raise TypeError(
                f"{cls.__name__}.SCALARS: expected a tuple of ScalarSpec, got {specs!r}"
            )
        names = [spec.name for spec in specs]
        taken = set(inspect.signature(Unfolded.__init__).parameters)
        clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & taken))
        if clash:
            raise TypeError(
                f"{cls.__name__}.SCALARS: expected names that are unique and not other "
                f"constructor arguments, got {', '.join(map(repr, clash))}"
            )

    def __init__(
        self,
        layers: int = 5,
        *,
        denoiser: nn.Module | None = None,
        prior: nn.Module | None = None,
        fidelity: L2 | None = None,
        trainable: Iterable[str] | bool = ("stepsize", "sigma"),
        share_parameters: Iterable[str] | bool = False,
        share_denoiser: bool = True,
        checkpoint_layers: bool = False,
        init: str = "auto",
        init_weight: float | None = None,
        ensemble: str | None = None,
        **scalars: object,
    ):
        super().__init__()
        declared = {spec.name: spec.default for spec in self.SCALARS}
        unknown = sorted(set(scalars) - set(declared))
        if unknown:
            raise TypeError(
                f"{unknown[0]}: expected a keyword argument of {type(self).__name__} (its "
                f"scalars are {', '.join(declared)}), got an unknown keyword"
            )
        layers = check_int("layers", layers, minimum=1)
        if (denoiser is None) == (prior is None):
            raise ValueError(
                "denoiser, prior: expected exactly one of them, got "
                + ("both" if denoiser is not None else "neither")
            )
        if denoiser is not None:
            prior = PnP(denoiser)
        elif not (isinstance(prior, nn.Module) and callable(getattr(prior, "prox", None))):
            raise TypeError(
                f"prior: expected an nn.Module with prox(x, sigma), got {describe(prior)}"
            )
        fidelity = L2() if fidelity is None else fidelity
        if not (isinstance(fidelity, nn.Module) and callable(getattr(fidelity, "prox", None))):
            raise TypeError(
                f"fidelity: expected a data fidelity such as unrolled.L2, got {describe(fidelity)}"
            )
        check_bool("share_denoiser", share_denoiser)
        check_bool("checkpoint_layers", checkpoint_layers)
        init_weight = check_initial_estimate(init, init_weight, names=("init", "init_weight"))
        if ensemble is not None and not (isinstance(ensemble, str) and ensemble in ENSEMBLES):
            expected = f"None or one of {', '.join(map(repr, ENSEMBLES))}"
            error = ValueError if isinstance(ensemble, str) else TypeError
            raise error(f"ensemble: expected {expected}, got {describe(ensemble)}")
        self.layers = layers
        self.ensemble = ensemble
        self.init = init
        self.init_weight = init_weight
        self.fidelity = fidelity
        self.share_denoiser = share_denoiser
        self.checkpoint_layers = checkpoint_layers
        priors = [prior] if share_denoiser else [copy.deepcopy(prior) for _ in range(layers)]
        self.priors = nn.ModuleList(priors)
        self.scalars = LayerScalars(
            self.SCALARS,
            {**declared, **scalars},
            layers,
            trainable=trainable,
            shared=share_parameters,
        )

    # -- what a subclass uses ---------------------------------------------------------

    def prior(self, k: int) -> nn.Module:
        """The prior of layer ``k`` (the shared one when ``share_denoiser``)."""
        return self.priors[0 if self.share_denoiser else k]

    def denoise(self, k: int, x: Tensor, sigma: Tensor) -> Tensor:
        """The prior's step of layer ``k`` (averaged over ``ensemble`` in evaluation)."""
        prior = self.prior(k)
        if self.ensemble is None or self.training:
            return prior.prox(x, sigma)
        return ensemble_average(lambda v: prior.prox(v, sigma), x, self.ensemble)

    @property
    def stepsize(self) -> Tensor:
        """``(layers,)`` step sizes ``gamma_k``."""
        return self.scalars["stepsize"]

    @property
    def sigma(self) -> Tensor:
        """``(layers,)`` denoiser noise levels ``sigma_k``."""
        return self.scalars["sigma"]

    # -- the algorithm ----------------------------------------------------------------

    def init_state(self, x0: Tensor) -> State:
        """The state before the first layer; by default the iterate ``x0`` alone."""
        return (x0,)

    @abc.abstractmethod
    def layer(
        self, k: int, state: State, y: Tensor, physics: LinearOperator, values: dict
    ) -> State:
        """One iteration; ``values[name]`` is the scalar ``name`` of this layer (0-d)."""

    def estimate(self, state: State) -> Tensor:
        """The output read from a state; by default its first tensor."""
        return state[0]

    def forward(self, y: Tensor, physics: LinearOperator, x0: Tensor | None = None) -> Tensor:
        """The estimate after ``layers`` iterations, from ``x0`` (default: the estimate
        ``init`` names)."""
        if not isinstance(y, Tensor):
            raise TypeError(f"y: expected a torch.Tensor, got {describe(y)}")
        if not isinstance(physics, LinearOperator):
            raise TypeError(
                "physics: expected a LinearOperator (e.g. unrolled.physics.Blur), "
                f"got {describe(physics)}"
            )
        if x0 is not None and not isinstance(x0, Tensor):
            raise TypeError(f"x0: expected a torch.Tensor or None, got {describe(x0)}")
        # Checked here, where the caller's names are known: inside, a NaN in y reaches the
        # data step as its point z, and the message would name the wrong argument.
        with torch.no_grad():
            bad = [name for name, t in (("y", y), ("x0", x0)) if t is not None]
            flags = torch.stack([~torch.isfinite(t).all() for t in (y, x0) if t is not None])
            bad = [name for name, flag in zip(bad, flags.tolist(), strict=True) if flag]
        if bad:
            raise ValueError(f"{bad[0]}: expected finite values, got NaN or Inf")
        if x0 is None:
            x0 = initial_estimate(physics, y, self.init, self.init_weight)
        state = self.init_state(x0)
        # Per-layer values are computed once, outside the (possibly checkpointed) layers,
        # so the parametrisation's graph is shared and not recomputed.
        values = {name: self.scalars[name] for name in self.scalars.specs}
        use_checkpoint = self.checkpoint_layers and torch.is_grad_enabled()
        for k in range(self.layers):
            layer_values = {name: v[k] for name, v in values.items()}
            try:
                if use_checkpoint:
                    state = checkpoint(
                        self._run_layer, k, physics, y, layer_values, *state, use_reentrant=False
                    )
                else:
                    state = self.layer(k, state, y, physics, layer_values)
            except ValueError as err:
                # Finite inputs, non-finite iterate: the iteration diverged, which is not
                # a bad argument of the caller's; say so instead of naming an inner one.
                if all(bool(torch.isfinite(t.detach()).all()) for t in state):
                    raise
                raise FloatingPointError(
                    f"{type(self).__name__}: the iterate became NaN or infinite before layer "
                    f"{k + 1} of {self.layers} (inputs finite): the layers diverge; use fewer "
                    "layers or smaller step sizes"
                ) from err
        return self.estimate(state)

    def _run_layer(self, k, physics, y, values, *state):
        return self.layer(k, tuple(state), y, physics, values)

    def extra_repr(self) -> str:
        return (
            f"layers={self.layers}, share_denoiser={self.share_denoiser}, "
            f"checkpoint_layers={self.checkpoint_layers}, init={self.init!r}"
            + (f", init_weight={self.init_weight:g}" if self.init_weight is not None else "")
        )
