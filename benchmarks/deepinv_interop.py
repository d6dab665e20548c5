"""How exactly ``unrolled.interop.deepinv`` reproduces deepinv's operators and their prox.

For each deepinv physics (float64, tiny sizes), the max relative differences of the
wrapped ``A`` and ``A_adjoint`` against deepinv's, the wrapped operator's adjointness
error ``|<A x, y> - <x, A^H y>|`` (relative), of the implicit prox against a dense
solve whose matrix is deepinv's ``A`` applied to the canonical basis, and of the
implicit gradients (``z``, ``y``, per-sample ``gamma``, each tensor of the physics made
by a "network", i.e. a non-leaf) against the closed forms of DESIGN.md section 1 and
autograd through the dense solve.

    python -m benchmarks.deepinv_interop

The cases are shared with ``tests/test_interop_deepinv.py``.
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

import unrolled as ur
from unrolled.testing import adjointness_error

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # a CUDA torchvision on a CPU torch
    from unrolled.interop import deepinv as interop

dinv = interop.dinv
DT = torch.float64

__all__ = ["CASES", "Case", "dense_matrix", "dense_truth", "ours", "set_tensor", "main"]


@dataclass(frozen=True)
class Case:
    """A deepinv physics at a tiny size: ``make()`` builds it, ``shape`` is its ``x``
    (deepinv's form), ``tensors`` the attribute paths of the tensors to differentiate,
    ``tie`` re-derives tensors the physics keeps in two forms (e.g. a matrix and its
    transpose) from the one replaced."""

    make: Callable[[], object]
    shape: tuple[int, ...]
    tensors: tuple[str, ...]
    tie: Callable[[object], None] | None = None

    def build(self):
        return self.make(), self.shape, self.tensors


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _blur(padding: str) -> Case:
    def make():
        k = torch.rand(1, 1, 3, 3, dtype=DT, generator=_gen(10))
        return dinv.physics.Blur(filter=k / k.sum(), padding=padding)

    return Case(make, (2, 1, 6, 6), ("filter",))


def _inpainting():
    mask = torch.rand(1, 6, 6, dtype=DT, generator=_gen(11))  # soft weights, any in [0, 1]
    return dinv.physics.Inpainting(img_size=(1, 6, 6), mask=mask)


def _downsampling():
    kernel = dinv.physics.functional.gaussian_blur(sigma=(2.0, 2.0)).to(DT)  # deepinv's "gaussian"
    return dinv.physics.Downsampling(
        img_size=(1, 8, 8), filter=kernel, factor=2, padding="circular"
    )


def _mri():
    mask = torch.rand(6, 6, dtype=DT, generator=_gen(12))
    return dinv.physics.MRI(mask=mask, img_size=(6, 6))


def _multicoil():
    g = _gen(13)
    mask = (torch.rand(6, 6, generator=g) > 0.4).to(DT)
    maps = torch.randn(2, 6, 6, dtype=torch.complex128, generator=g) / 2
    return dinv.physics.MultiCoilMRI(mask=mask, coil_maps=maps, img_size=(1, 6, 6))


def _compressed_sensing():
    return dinv.physics.CompressedSensing(m=20, img_size=(1, 6, 6), dtype=DT, rng=_gen(14))


def _tie_cs(physics) -> None:
    physics._A_adjoint = physics._A.conj().T


def _tomography():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return dinv.physics.Tomography(angles=5, img_width=6, normalize=False, dtype=DT)


CASES: dict[str, Case] = {
    **{f"Blur({p})": _blur(p) for p in ("valid", "circular", "replicate", "reflect", "constant")},
    "Inpainting": Case(_inpainting, (2, 1, 6, 6), ("mask",)),
    "Downsampling": Case(_downsampling, (2, 1, 8, 8), ("filter",)),
    "MRI": Case(_mri, (2, 2, 6, 6), ("mask",)),
    "MultiCoilMRI": Case(_multicoil, (2, 2, 6, 6), ("mask", "coil_maps")),
    "CompressedSensing": Case(_compressed_sensing, (2, 1, 6, 6), ("_A",), _tie_cs),
    "Tomography": Case(_tomography, (2, 1, 6, 6), ("radon.all_grids",)),
}


# -- helpers ---------------------------------------------------------------------------


def get_tensor(module, path: str) -> Tensor:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def set_tensor(module, path: str, tensor: Tensor) -> None:
    *parents, name = path.split(".")
    for part in parents:
        module = getattr(module, part)
    setattr(module, name, tensor)


def dense_matrix(physics, sample_shape) -> Tensor:
    """deepinv's ``A`` on the canonical basis of one sample: ``(m, n)``, differentiable
    with respect to the physics' tensors."""
    n = math.prod(sample_shape[1:])
    eye = torch.eye(n, dtype=DT).reshape(n, *sample_shape[1:])
    return physics.A(eye).reshape(n, -1).transpose(0, 1)


def _setup(case: Case, seed: int):
    """A fresh physics whose tensors are non-leaves made from leaves, and the draws."""
    physics, shape, names = case.build()
    leaves = {n: get_tensor(physics, n).detach().clone().requires_grad_() for n in names}
    for n, leaf in leaves.items():
        set_tensor(physics, n, leaf * 1)  # a non-leaf, as a network's output would be
    if case.tie is not None:
        case.tie(physics)
    g = _gen(seed)
    with torch.no_grad():
        m_shape = physics.A(torch.zeros(shape, dtype=DT)).shape
    z = torch.randn(shape, dtype=DT, generator=g)
    y = torch.randn(m_shape, dtype=DT, generator=g)
    v = torch.randn(shape, dtype=DT, generator=g)
    gamma = 0.5 + torch.rand(shape[0], dtype=DT, generator=g)
    return physics, leaves, z, y, v, gamma


def dense_truth(case: Case, shape=None, *, seed: int = 1) -> dict[str, Tensor]:
    """``h`` and the gradients of ``<v, h>``: closed forms for ``z``, ``y``, ``gamma``
    (``u = M v``: ``u / gamma``, ``A u``, ``<u, h - z> / gamma^2``), autograd through the
    dense solve for the physics' tensors."""
    physics, leaves, z, y, v, gamma = _setup(case, seed)
    a = dense_matrix(physics, (1, *z.shape[1:]))
    eye = torch.eye(a.shape[1], dtype=DT)
    h, dz, dy, dgamma = [], [], [], []
    for b in range(z.shape[0]):
        m = a.T @ a + eye / gamma[b]
        hb = torch.linalg.solve(m, a.T @ y[b].reshape(-1) + z[b].reshape(-1) / gamma[b])
        with torch.no_grad():
            u = torch.linalg.solve(m, v[b].reshape(-1))
            dz.append(u / gamma[b])
            dy.append(a @ u)
            dgamma.append(u @ (hb - z[b].reshape(-1)) / gamma[b] ** 2)
        h.append(hb)
    h = torch.stack(h).reshape(z.shape)
    grads = torch.autograd.grad((v * h).sum(), list(leaves.values()))
    out = {
        "h": h.detach(),
        "z": torch.stack(dz).reshape(z.shape),
        "y": torch.stack(dy).reshape(y.shape),
        "gamma": torch.stack(dgamma),
    }
    out.update(dict(zip(leaves, grads, strict=True)))
    return out


def ours(
    case: Case, shape=None, *, seed: int = 1, solver: ur.CG, backward: str = "implicit"
) -> dict[str, Tensor]:
    """The same quantities from ``ur.prox_l2(as_operator(physics), ...)``."""
    physics, leaves, z, y, v, gamma = _setup(case, seed)
    inputs = [t.requires_grad_() for t in (z, y, gamma)]
    op = interop.as_operator(physics)
    if op.complex:
        zc, yc = interop.to_complex(z), interop.to_complex(y)
        h = interop.to_real(ur.prox_l2(op, zc, yc, gamma, solver=solver, backward=backward))
    else:
        h = ur.prox_l2(op, z, y, gamma, solver=solver, backward=backward)
    grads = torch.autograd.grad((v * h).sum(), inputs + list(leaves.values()))
    out = {"h": h.detach(), **dict(zip(("z", "y", "gamma", *leaves), grads, strict=True))}
    return out


def _rel(a: Tensor, b: Tensor) -> float:
    return ur.testing.relative_error(a, b)


def measure(case: Case, solver: ur.CG) -> dict[str, float]:
    physics, shape, names = case.build()
    g = _gen(0)
    op = interop.as_operator(physics)
    x = torch.randn(shape, dtype=DT, generator=g)
    with torch.no_grad():
        ax = physics.A(x)
        y = torch.randn(ax.shape, dtype=DT, generator=g)
        aty = physics.A_adjoint(y)
        if op.complex:
            ours_ax = interop.to_real(op.A(interop.to_complex(x)))
            ours_aty = interop.to_real(op.A_adjoint(interop.to_complex(y)))
        else:
            ours_ax, ours_aty = op.A(x), op.A_adjoint(y)
        xin = interop.to_complex(x) if op.complex else x
        adjointness = adjointness_error(op, xin, generator=_gen(2))
    truth = dense_truth(case, seed=1)
    got = ours(case, seed=1, solver=solver)
    return {
        "adjointness": adjointness,
        "A": _rel(ours_ax, ax),
        "A_adjoint": _rel(ours_aty, aty),
        "prox": _rel(got["h"], truth["h"]),
        "dz": _rel(got["z"], truth["z"]),
        "dy": _rel(got["y"], truth["y"]),
        "dgamma": _rel(got["gamma"], truth["gamma"]),
        "dtheta": max(_rel(got[n], truth[n]) for n in names),
        "theta": ", ".join(names),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tol", type=float, default=1e-13, help="CG relative tolerance")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    solver = ur.CG(max_iter=2000, tol=args.tol)
    cols = ("A", "A_adjoint", "adjointness", "prox", "dz", "dy", "dgamma", "dtheta")
    print(f"max relative difference (float64; CG tol {args.tol:g})")
    print(f"{'operator':<20}" + "".join(f"{c:>12}" for c in cols) + "  physics tensors")
    for name, case in CASES.items():
        r = measure(case, solver)
        print(f"{name:<20}" + "".join(f"{r[c]:>12.1e}" for c in cols) + f"  {r['theta']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
