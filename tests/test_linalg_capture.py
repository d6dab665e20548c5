"""Tensor capture for the implicit backward: which tensors an operator holds, the copy
that holds others, and gradients reaching every kind of tensor through it."""

import pytest
import torch
from torch import nn

from unrolled.linalg import CG, LinearOperator, MatrixOperator, prox_l2
from unrolled.linalg._capture import Capture, tensor_slots, with_tensors
from unrolled.testing import dense_prox, prox_gradients, relative_error

F64 = torch.float64
TIGHT = CG(max_iter=500, tol=1e-14)


def _rand(*shape, seed):
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


class Mixed(LinearOperator):
    """``A x = (w * s) x @ M^T``: a parameter, a buffer, a plain attribute, a sub-module."""

    def __init__(self, weight, scale, matrix):
        super().__init__()
        self.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight)
        self.register_buffer("scale", scale)
        self.inner = MatrixOperator(matrix)  # its matrix is a plain tensor attribute
        self.padding = "same"  # a setting, not a tensor

    def A(self, x):  # noqa: N802
        return self.inner.A(self.weight * self.scale * x)

    def A_adjoint(self, y):  # noqa: N802
        return self.weight * self.scale * self.inner.A_adjoint(y)


def _mixed(seed=0):
    return Mixed(_rand(4, seed=seed), _rand(4, seed=seed + 1), _rand(3, 4, seed=seed + 2))


def test_slots_name_every_kind_of_tensor():
    op = _mixed()
    slots = {(path, kind, name) for path, kind, name, _ in tensor_slots(op)}
    assert slots == {
        ((), "_parameters", "weight"),
        ((), "_buffers", "scale"),
        (("inner",), "__dict__", "matrix"),
    }


def test_copy_holds_new_tensors_and_keeps_the_settings_of_its_time():
    op = _mixed()
    slots = list(tensor_slots(op))
    new = [torch.zeros_like(t) for *_, t in slots]
    copy = with_tensors(op, slots, new)
    op.padding = "changed later"
    assert copy.padding == "same"
    assert all(t.abs().sum() == 0 for *_, t in tensor_slots(copy))
    assert copy.inner is not op.inner
    # the original is untouched
    assert all(a is b for (*_, a), (*_, b) in zip(tensor_slots(op), slots, strict=True))


def test_a_tensor_held_twice_is_one_input():
    shared = _rand(4, seed=3)
    op = Mixed(shared, shared.clone(), _rand(3, 4, seed=4))
    op.inner.matrix = op.scale[:3, None].expand(3, 4)  # a view: another tensor object
    op.alias = op.scale  # the buffer held a second time, as a plain attribute
    capture = Capture.of(op)
    assert len(capture.slots) == 4 and len(capture.tensors) == 3
    replaced = [torch.full_like(t, 2.0) for t in capture.tensors]
    copy = capture.rebuild(op, replaced)
    assert copy.alias is copy.scale


@pytest.mark.parametrize("backward", ["implicit", "checkpoint"])
def test_gradients_reach_parameters_buffers_attributes_and_upstream_networks(backward):
    """The operator's matrix is made by a network; the implicit and checkpoint gradients
    of every leaf, the network's weights included, match a dense solve."""
    net = nn.Linear(2, 12, dtype=F64)
    with torch.no_grad():
        net.weight.copy_(_rand(12, 2, seed=5) * 0.3)
        net.bias.copy_(_rand(12, seed=6) * 0.3)
    code = _rand(2, seed=7)
    z, y, v = _rand(2, 4, seed=8), _rand(2, 3, seed=9), _rand(2, 4, seed=10)
    gamma = torch.tensor(0.8, dtype=F64)
    weight, scale = _rand(4, seed=11), _rand(4, seed=12)
    leaves = [t.clone().requires_grad_() for t in (z, y, gamma, scale, net.weight, net.bias)]
    leaves.insert(3, nn.Parameter(weight.clone()))  # the operator's own parameter

    def run(kind):
        def prox(z, y, gamma):
            matrix = nn.functional.linear(code, leaves[5], leaves[6]).reshape(3, 4)
            op = Mixed(leaves[3], leaves[4], matrix)
            if kind == "dense":
                return dense_prox(op, z, y, gamma)
            return prox_l2(op, z, y, gamma, solver=TIGHT, backward=kind)

        return prox_gradients(prox, leaves, v)

    h_ref, ref = run("dense")
    h, grads = run(backward)
    assert relative_error(h, h_ref) <= 1e-12
    for name, a, b in zip(("z", "y", "gamma", "w", "s", "W", "b"), grads, ref, strict=True):
        # float64, system condition below ~50, CG tol 1e-14: ~1e-12 expected
        assert relative_error(a, b) <= 1e-9, name


def test_an_operator_missing_a_method_cannot_be_built():
    class ForwardOnly(LinearOperator):
        def A(self, x):  # noqa: N802
            return x

    with pytest.raises(TypeError, match="A_adjoint"):
        ForwardOnly()
