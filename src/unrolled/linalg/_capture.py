"""Capture of an operator's tensors for a backward pass that runs later.

The implicit and checkpoint backward passes of :func:`unrolled.linalg.prox_l2` pass
every tensor the operator holds to an autograd Function as an input, so gradients
reach parameters, buffers, plain tensor attributes and tensors made by another
network, and autograd checks their versions. At backward the operator is rebuilt
around the saved tensors (or detached leaves standing in for them).

Why not ``torch.func.functional_call``: it swaps tensors into the live module for the
duration of one call and restores them afterwards, so a backward run later would see
the operator's settings as they are then, not as they were at forward; it also
reaches parameters and buffers only, not plain tensor attributes. A shallow copy of
the module tree taken at forward keeps both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

__all__ = ["Capture", "tensor_slots", "with_tensors"]

#: ``(module_path, kind, name, tensor)``, ``kind`` one of ``"_parameters"``,
#: ``"_buffers"``, ``"__dict__"`` (a plain tensor attribute)
Slot = tuple[tuple[str, ...], str, str, Tensor]


def tensor_slots(module: nn.Module, prefix: tuple[str, ...] = ()) -> Iterator[Slot]:
    """Every tensor a module holds: ``(module_path, kind, name, tensor)``.

    ``kind`` is ``"_parameters"``, ``"_buffers"`` or ``"__dict__"`` (a plain tensor
    attribute); sub-modules are walked recursively.
    """
    for kind in ("_parameters", "_buffers"):
        for name, tensor in module.__dict__[kind].items():
            if tensor is not None:
                yield prefix, kind, name, tensor
    for name, value in module.__dict__.items():
        if isinstance(value, Tensor):
            yield prefix, "__dict__", name, value
    for name, child in module._modules.items():
        if child is not None:
            yield from tensor_slots(child, prefix + (name,))


def with_tensors(module: nn.Module, slots: Sequence[Slot], tensors: Sequence[Tensor]) -> nn.Module:
    """A copy of ``module`` in which each slot holds the matching tensor.

    Every module of the tree is copied shallowly (their attributes are shared, their
    parameter, buffer and sub-module tables are not), so a copy taken at forward time
    keeps the operator as it was, also if the user reassigns its tensors or settings
    before backward. The original is untouched.
    """
    root = _clone_tree(module)
    for (path, kind, name, _), tensor in zip(slots, tensors, strict=True):
        target = root
        for step in path:
            target = target._modules[step]
        if kind == "__dict__":
            target.__dict__[name] = tensor
        else:
            # A plain tensor in _parameters is what torch.func.functional_call does too:
            # attribute access returns it, and this private copy is never trained.
            target.__dict__[kind][name] = tensor
    return root


def _clone_tree(module: nn.Module) -> nn.Module:
    clone = module.__class__.__new__(module.__class__)
    clone.__dict__.update(module.__dict__)
    for key in ("_parameters", "_buffers", "_modules"):
        clone.__dict__[key] = module.__dict__[key].copy()
    for name, child in module._modules.items():
        if child is not None:
            clone._modules[name] = _clone_tree(child)
    return clone


@dataclass(frozen=True)
class Capture:
    """The distinct tensors of a module (a tensor held twice is one input) and where each
    slot of the module finds its tensor among them."""

    slots: tuple[Slot, ...]
    slot_index: tuple[int, ...]
    tensors: tuple[Tensor, ...]

    @classmethod
    def of(cls, module: nn.Module) -> Capture:
        slots = tuple(tensor_slots(module))
        tensors: list[Tensor] = []
        position: dict[int, int] = {}
        slot_index = []
        for *_, t in slots:
            if id(t) not in position:
                position[id(t)] = len(tensors)
                tensors.append(t)
            slot_index.append(position[id(t)])
        return cls(slots, tuple(slot_index), tuple(tensors))

    def rebuild(self, module: nn.Module, tensors: Sequence[Tensor]) -> nn.Module:
        """A shallow copy of ``module`` holding ``tensors`` (one per distinct tensor)."""
        return with_tensors(module, self.slots, [tensors[i] for i in self.slot_index])
