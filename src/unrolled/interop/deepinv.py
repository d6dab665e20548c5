"""DeepInverse (deepinv) physics as ``unrolled`` operators, and a deepinv data fidelity
whose prox is ``unrolled``'s.

    op = as_operator(physics)                    # any deepinv LinearPhysics
    h = ur.prox_l2(op, z, y, gamma, solver=ur.CG(tol=1e-8), backward="implicit")

    fidelity = L2(solver=ur.CG(max_iter=100, tol=1e-8))   # instead of deepinv.optim.L2()
    model = deepinv.unfolded.unfolded_builder("HQS", data_fidelity=fidelity, ...)

The prox ``argmin_x 1/2 ||A x - y||^2 + 1/(2 gamma) ||x - z||^2`` is differentiated at
its solution (one more CG solve in backward, memory independent of the iterations), and
every tensor the physics holds (parameters, buffers, tensor attributes, a tensor made by
a network) receives its gradient through autograd, under ``.backward()`` and
``torch.autograd.grad`` alike, from the physics as it was at the forward call.

Complex data: deepinv's MRI physics take two real channels ``(B, 2, ...)`` (real part,
imaginary part). :func:`as_operator` presents them as complex tensors ``(B, 1, ...)``,
the rest of the shape being deepinv's (a multi-coil k-space is ``(B, 1, N, H, W)``).

``backward="unroll"`` and ``"checkpoint"`` differentiate deepinv's ``A_adjoint`` as it is
written; where that is deepinv's autograd adjoint (``Tomography``, a ``LinearPhysics``
given only ``img_size``) it carries no derivative in the physics' tensors, so use the
implicit mode (the default, which needs the derivative of ``A`` only) to train those.

Importing this module imports deepinv (``pip install "unrolled[deepinv]"``);
``import unrolled`` does not.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_choice, check_instance, check_tensor
from ..fidelity import L2 as UnrolledL2
from ..fidelity import SolveStats
from ..linalg._capture import tensor_slots
from ..linalg.cg import CG
from ..linalg.operator import LinearOperator
from ..linalg.prox import BACKWARD_MODES
from ._imports import import_deepinv

dinv = import_deepinv()

__all__ = ["DeepinvOperator", "L2", "as_operator", "to_complex", "to_real"]

# deepinv's Tomography builds its autograd adjoint once and keeps it: a closure over the
# tensors of the module that built it.
_CACHED_ADJOINT = "_auto_grad_adjoint_fn"


def to_complex(x: Tensor, name: str = "x") -> Tensor:
    """deepinv's two real channels ``(B, 2, ...)`` as one complex channel ``(B, 1, ...)``."""
    check_tensor(name, x)
    if x.is_complex() or x.ndim < 2 or x.shape[1] != 2:
        got = f"shape {tuple(x.shape)}, dtype {x.dtype}"
        raise ValueError(f"{name}: expected a real tensor of shape (B, 2, ...), got {got}")
    return torch.view_as_complex(x.movedim(1, -1).contiguous()).unsqueeze(1)


def to_real(x: Tensor, name: str = "x") -> Tensor:
    """A complex ``(B, 1, ...)`` tensor as deepinv's two real channels ``(B, 2, ...)``."""
    check_tensor(name, x)
    if not x.is_complex() or x.ndim < 2 or x.shape[1] != 1:
        got = f"shape {tuple(x.shape)}, dtype {x.dtype}"
        raise ValueError(f"{name}: expected a complex tensor of shape (B, 1, ...), got {got}")
    return torch.view_as_real(x.squeeze(1)).movedim(-1, 1).contiguous()


class DeepinvOperator(LinearOperator):
    """A deepinv ``LinearPhysics`` as a :class:`~unrolled.linalg.LinearOperator`.

    ``A x = physics.A(x)`` and ``A^H y = physics.A_adjoint(y)`` on deepinv's tensors, or,
    with ``complex=True``, on complex ``(B, 1, ...)`` tensors mapped to and from deepinv's
    ``(B, 2, ...)`` by :func:`to_real` / :func:`to_complex` (an isometry, so the adjoint
    stays the adjoint). The physics is a sub-module: its tensors are the operator's.
    Build it with :func:`as_operator`.
    """

    def __init__(self, physics, *, complex: bool):
        super().__init__()
        self.physics = physics
        self.complex = complex

    def A(self, x: Tensor) -> Tensor:  # noqa: N802 - the field's notation
        if self.complex:
            return to_complex(self.physics.A(to_real(x, "x")), "physics.A(x)")
        return self.physics.A(x)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        self._fresh_cached_adjoint()
        if self.complex:
            return to_complex(self.physics.A_adjoint(to_real(y, "y")), "physics.A_adjoint(y)")
        return self.physics.A_adjoint(y)

    def normal(self, x: Tensor) -> Tensor:
        # deepinv's A_adjoint_A is fused (closed form) for its decomposable physics
        self._fresh_cached_adjoint()
        if self.complex:
            return to_complex(self.physics.A_adjoint_A(to_real(x, "x")), "physics.A_adjoint_A(x)")
        return self.physics.A_adjoint_A(x)

    def domain_dtype(self) -> torch.dtype:
        """The physics' ``dtype`` attribute, else that of its first floating tensor (its
        noise model and device marker aside); complex when ``complex`` is set."""
        dtype = getattr(self.physics, "dtype", None)
        if not isinstance(dtype, torch.dtype):
            dtype = torch.get_default_dtype()
            for path, _, name, t in tensor_slots(self.physics):
                operator_tensor = path[:1] != ("noise_model",) and name != "_device_holder"
                if operator_tensor and (t.is_floating_point() or t.is_complex()):
                    dtype = t.dtype
                    break
        real = dtype.to_real() if dtype.is_complex else dtype
        return real.to_complex() if self.complex else real

    def _fresh_cached_adjoint(self) -> None:
        # A snapshot taken by prox_l2 is a shallow copy that shares such a cached closure
        # with the original: drop it (on the copy only) so the copy builds its own from the
        # tensors it holds. The owner marker lives in the plain __dict__ (not a sub-module).
        physics = self.physics
        if self.__dict__.get("_adjoint_owner") is physics:
            return
        for module in physics.modules():
            if module.__dict__.get(_CACHED_ADJOINT) is not None:
                module.__dict__[_CACHED_ADJOINT] = None
        self.__dict__["_adjoint_owner"] = physics

    def extra_repr(self) -> str:
        return f"complex={self.complex}"


def as_operator(physics, *, complex: bool | None = None) -> DeepinvOperator:
    """Wrap a deepinv ``LinearPhysics`` as an ``unrolled`` linear operator.

    Args:
        physics: a ``deepinv.physics.LinearPhysics`` (blur, inpainting, MRI, tomography,
            compressed sensing, your own with an adjoint ...).
        complex: present deepinv's two real channels as complex ``(B, 1, ...)`` tensors;
            default: ``True`` for deepinv's MRI physics, ``False`` otherwise.

    Raises:
        TypeError: ``physics`` is not a deepinv physics, or is nonlinear, or returns
            several measurements (a stacked physics).
        ValueError: the physics has no adjoint (no ``A_adjoint`` and no ``img_size`` for
            deepinv's autograd adjoint).
    """
    cls = f"{type(physics).__module__}.{type(physics).__qualname__}"
    if not isinstance(physics, dinv.physics.Physics):
        raise TypeError(f"physics: expected a deepinv.physics.LinearPhysics, got {cls}")
    if not isinstance(physics, dinv.physics.LinearPhysics):
        raise TypeError(
            f"physics: expected a deepinv.physics.LinearPhysics, got {cls}, a nonlinear "
            "physics: the least-squares prox and its implicit backward need a linear A "
            "with an adjoint"
        )
    if isinstance(physics, dinv.physics.StackedPhysics):
        raise TypeError(
            f"physics: expected a deepinv.physics.LinearPhysics with one measurement "
            f"tensor, got {cls}, whose measurements are a TensorList; wrap each physics "
            "on its own"
        )
    own_adjoint = type(physics).A_adjoint is not dinv.physics.LinearPhysics.A_adjoint
    if not own_adjoint and physics.A_adj is None and physics.img_size is None:
        raise ValueError(
            f"physics: expected a linear physics with an adjoint, got {cls} with none "
            "(no A_adjoint, and no img_size for deepinv's autograd adjoint); pass "
            "A_adjoint= or img_size= when building it"
        )
    if complex is None:
        complex = isinstance(physics, dinv.utils.mixins.MRIMixin)
    check_instance("complex", complex, bool, "True, False or None")
    return DeepinvOperator(physics, complex=complex)


class L2(dinv.optim.L2):
    """deepinv's ``L2`` data fidelity ``f(x) = 1/(2 sigma^2) ||A x - y||^2`` whose prox is
    :func:`unrolled.prox_l2` (exact implicit backward by default).

    A drop-in for ``deepinv.optim.L2()`` in ``unfolded_builder``, ``deepinv.optim``
    algorithms and anywhere deepinv takes a data fidelity: ``fn`` and ``grad`` are
    deepinv's; ``prox(x, y, physics, gamma=g)`` is
    ``argmin_u g/sigma^2 * 1/2 ||A u - y||^2 + 1/2 ||u - x||^2``, i.e. ``unrolled``'s prox
    with step ``g / sigma^2``. ``physics`` is a deepinv ``LinearPhysics`` (wrapped by
    :func:`as_operator`, on deepinv's real tensors) or an ``unrolled`` operator.

    Args:
        sigma: deepinv's noise level normalisation.
        solver: CG settings (default ``ur.CG()``).
        backward: ``"implicit"`` (default), ``"unroll"`` or ``"checkpoint"``.

    ``stats`` holds the running CG iteration counts, as ``unrolled.L2``'s does.
    """

    def __init__(self, sigma: float = 1.0, *, solver: CG | None = None, backward="implicit"):
        super().__init__(sigma=sigma)
        if solver is not None:
            check_instance("solver", solver, CG, "an unrolled.CG")
        check_choice("backward", backward, BACKWARD_MODES)
        # The data step and its solve statistics are this library's own L2.
        self.data_step = UnrolledL2(solver=solver, backward=backward)

    @property
    def solver(self) -> CG:
        return self.data_step.solver

    @property
    def backward(self) -> str:
        return self.data_step.backward

    @property
    def stats(self) -> SolveStats:
        return self.data_step.stats

    def prox(self, x: Tensor, y: Tensor, physics, *args, gamma=1.0, **kwargs) -> Tensor:
        """``prox_{gamma f}(x)``; extra arguments deepinv's iterators pass are not used."""
        # on deepinv's real tensors throughout (for MRI too): the prox is the same either way
        op = physics if isinstance(physics, LinearOperator) else as_operator(physics, complex=False)
        return self.data_step.prox(x, y, op, self.norm * gamma)

    def extra_repr(self) -> str:
        return f"sigma={self.norm**-0.5:g}, solver={self.solver}, backward={self.backward!r}"
