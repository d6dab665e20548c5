"""Per-layer scalars of an unfolded algorithm (step sizes, noise levels, ...).

Each scalar is stored unconstrained and mapped to its admissible range, so that no
optimiser step can make it invalid:

* ``"positive"`` (``(0, inf)``): ``value = exp(raw)``. A step on ``raw`` changes the
  value by a factor, which suits quantities that span orders of magnitude (a noise
  level of 0.001 and one of 0.1 move at the same relative pace).
* ``"relaxation"`` (``(0, 2)``): ``value = 2 * sigmoid(raw)``.

A trainable scalar is an ``nn.Parameter``, a fixed one a buffer; both hold ``raw``
under the name ``log_<name>`` or ``logit_<name>``, of shape ``(layers,)`` or ``(1,)``
when shared by all layers, so a ``state_dict`` has the same keys whichever scalars are
trained.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from numbers import Real

import torch
from torch import Tensor, nn

from .._validation import check_choice, check_real, describe

__all__ = ["ScalarSpec", "LayerScalars"]

CONSTRAINTS = {"positive": ("log_", "(0, inf)"), "relaxation": ("logit_", "(0, 2)")}


@dataclass(frozen=True)
class ScalarSpec:
    """One scalar of an algorithm: its name, its default initial value and its range.

    Args:
        name: the constructor keyword and the name in ``model.scalars[name]``.
        default: the initial value when the constructor is not given one.
        constraint: ``"positive"`` (``(0, inf)``) or ``"relaxation"`` (``(0, 2)``).
    """

    name: str
    default: float
    constraint: str = "positive"

    def __post_init__(self):
        if not (isinstance(self.name, str) and self.name.isidentifier()):
            raise TypeError(f"name: expected a Python identifier, got {describe(self.name)}")
        check_choice("constraint", self.constraint, tuple(CONSTRAINTS))
        check_real(f"{self.name}.default", self.default)
        if not self.check(float(self.default)):
            span = CONSTRAINTS[self.constraint][1]
            raise ValueError(
                f"{self.name}.default: expected a value in {span}, got {self.default!r}"
            )

    def check(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return value > 0 if self.constraint == "positive" else 0 < value < 2

    def to_raw(self, value: Tensor) -> Tensor:
        if self.constraint == "positive":
            return torch.log(value)
        return torch.logit(value / 2)

    def from_raw(self, raw: Tensor) -> Tensor:
        if self.constraint == "positive":
            return torch.exp(raw)
        return 2 * torch.sigmoid(raw)

    @property
    def storage_name(self) -> str:
        return CONSTRAINTS[self.constraint][0] + self.name


def _initial_values(spec: ScalarSpec, value, layers: int) -> list[float]:
    name = spec.name
    expected = f"a number or a sequence of {layers} numbers (one per layer)"
    if isinstance(value, Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name}: expected {expected}, got {describe(value)}")
        if value.ndim > 1:
            raise ValueError(f"{name}: expected {expected}, got {describe(value)}")
        value = value.detach().double().cpu().tolist()
    if isinstance(value, Real) and not isinstance(value, bool):
        values = [float(value)] * layers
    elif isinstance(value, Sequence) and not isinstance(value, str):
        wrong = [v for v in value if isinstance(v, bool) or not isinstance(v, Real)]
        if wrong:
            raise TypeError(f"{name}: expected {expected}, got an entry {describe(wrong[0])}")
        if len(value) != layers:
            raise ValueError(f"{name}: expected {expected}, got {len(value)} values {value!r}")
        values = [float(v) for v in value]
    else:
        raise TypeError(f"{name}: expected {expected}, got {describe(value)}")
    bad = [v for v in values if not spec.check(v)]
    if bad:
        span = CONSTRAINTS[spec.constraint][1]
        raise ValueError(f"{name}: expected values in {span}, got {bad[0]!r}")
    return values


def _names(argument: str, value, known: Sequence[str]) -> set[str]:
    if isinstance(value, bool):
        return set(known) if value else set()
    if isinstance(value, str):
        value = (value,)
    if value is None:
        return set()
    if not isinstance(value, Iterable):
        raise TypeError(
            f"{argument}: expected a bool or names among {tuple(known)}, got {describe(value)}"
        )
    names = list(value)
    wrong = [n for n in names if not isinstance(n, str)]
    if wrong:
        raise TypeError(
            f"{argument}: expected names among {tuple(known)}, got an entry {describe(wrong[0])}"
        )
    names = set(names)
    unknown = sorted(str(n) for n in names - set(known))
    if unknown:
        raise ValueError(
            f"{argument}: expected names among {tuple(known)}, "
            f"got unknown {', '.join(map(repr, unknown))}"
        )
    return names


class LayerScalars(nn.Module):
    """The scalars of ``layers`` layers; ``self[name]`` is a ``(layers,)`` tensor of values.

    Args:
        specs: the scalars and their ranges.
        values: initial value of each scalar, a number or one per layer.
        layers: number of layers.
        trainable: names of the trainable scalars (or ``True`` / ``False`` for all / none).
        shared: names of the scalars with one value for all layers (or a bool).
    """

    def __init__(
        self,
        specs: Sequence[ScalarSpec],
        values: dict[str, object],
        layers: int,
        trainable: Iterable[str] | bool = (),
        shared: Iterable[str] | bool = False,
    ):
        super().__init__()
        self.specs = {spec.name: spec for spec in specs}
        known = tuple(self.specs)
        self.layers = layers
        self.trainable = _names("trainable", trainable, known)
        self.shared = _names("share_parameters", shared, known)
        dtype = torch.get_default_dtype()
        for name, spec in self.specs.items():
            initial = _initial_values(spec, values[name], layers)
            if name in self.shared:
                if any(v != initial[0] for v in initial):
                    raise ValueError(
                        f"{name}: expected one value for all layers (share_parameters), "
                        f"got different values per layer {initial}"
                    )
                initial = initial[:1]
            raw = spec.to_raw(torch.tensor(initial, dtype=torch.float64)).to(dtype)
            if name in self.trainable:
                self.register_parameter(spec.storage_name, nn.Parameter(raw))
            else:
                self.register_buffer(spec.storage_name, raw)

    def raw(self, name: str) -> Tensor:
        """The stored unconstrained tensor of ``name``: ``(layers,)`` or ``(1,)``."""
        return getattr(self, self.specs[name].storage_name)

    def __getitem__(self, name: str) -> Tensor:
        if name not in self.specs:
            raise KeyError(f"{name!r}: not one of {tuple(self.specs)}")
        values = self.specs[name].from_raw(self.raw(name))
        return values.expand(self.layers)

    def extra_repr(self) -> str:
        parts = []
        for name in self.specs:
            values = [f"{v:.4g}" for v in self[name].detach().tolist()]
            flags = ("trainable" if name in self.trainable else "fixed") + (
                ", shared" if name in self.shared else ""
            )
            parts.append(f"{name}=[{', '.join(values)}] ({flags})")
        return "\n".join(parts)
