"""Accuracy and memory figures of the core (prox_l2, CG, Blur) against dense float64 truths.

    python -m benchmarks.core_accuracy

Prints one line per figure; the test suite asserts the same quantities against their
thresholds, this script shows the measured values.
"""

from __future__ import annotations

import torch

from unrolled.linalg import CG, MatrixOperator, prox_l2, prox_l2_with_info
from unrolled.physics import (
    MRI,
    PADDINGS,
    Blur,
    CompressedSensing,
    Downsampling,
    Inpainting,
    MultiCoilMRI,
    cartesian_mask,
    gaussian_kernel,
    smooth_coil_maps,
)
from unrolled.testing import adjointness_error, dense_prox
from unrolled.testing import relative_error as rel
from unrolled.train import SavedTensorMeter

F64 = torch.float64


def main() -> None:
    g = torch.Generator().manual_seed(0)
    print("adjoint test, float64, relative mismatch |<Ax,y> - <x,A^T y>| / (|Ax||y|):")
    for padding in PADDINGS:
        err = adjointness_error(
            Blur(torch.rand(5, 4, dtype=F64, generator=g), padding=padding),
            (2, 3, 16, 16),
            generator=g,
        )
        print(f"  blur {padding:9s} {err:.1e}")
    m = torch.randn(20, 30, dtype=torch.complex128, generator=g)
    print(f"  dense complex128 {adjointness_error(MatrixOperator(m), (4, 30), generator=g):.1e}")

    print("prox_l2 vs dense float64 solve (CG tol 1e-13), relative error:")
    tight = CG(max_iter=2000, tol=1e-13)
    for padding in ("valid", "circular"):
        k = gaussian_kernel(1.0, 5, dtype=F64)
        op = Blur(k, padding=padding)
        z = torch.randn(2, 3, 12, 12, dtype=F64, generator=g)
        y = op.A(torch.rand(2, 3, 12, 12, dtype=F64, generator=g))
        h = prox_l2(op, z, y, 2.0, solver=tight)
        print(f"  blur {padding:9s} {rel(h, dense_prox(op, z, y, 2.0)):.1e}")
    zc = torch.randn(2, 30, dtype=torch.complex128, generator=g)
    yc = torch.randn(2, 20, dtype=torch.complex128, generator=g)
    hc = prox_l2(MatrixOperator(m), zc, yc, 0.7, solver=tight)
    print(f"  dense complex128 {rel(hc, dense_prox(MatrixOperator(m), zc, yc, 0.7)):.1e}")

    print("implicit gradients vs dense closed form (float64, valid blur), relative error:")
    k = (gaussian_kernel(1.0, 5, dtype=F64) + 0.05).requires_grad_()
    z = torch.randn(2, 3, 10, 10, dtype=F64, generator=g).requires_grad_()
    y = torch.randn(2, 3, 6, 6, dtype=F64, generator=g).requires_grad_()
    v = torch.randn(2, 3, 10, 10, dtype=F64, generator=g)
    gammas = {
        "float": 0.8,
        "0-d": torch.tensor(0.8, dtype=F64, requires_grad=True),
        "(B,)": torch.tensor([0.3, 2.0], dtype=F64, requires_grad=True),
        "(1,C,1,1)": torch.tensor([0.5, 1.0, 3.0], dtype=F64).reshape(1, 3, 1, 1).requires_grad_(),
    }
    for name, gamma in gammas.items():
        inputs = [z, y, k] + ([gamma] if isinstance(gamma, torch.Tensor) else [])
        h = prox_l2(Blur(k), z, y, gamma, solver=tight)
        grads = torch.autograd.grad((h * v).sum(), inputs)
        truth = torch.autograd.grad((dense_prox(Blur(k), z, y, gamma) * v).sum(), inputs)
        errors = ", ".join(
            f"{n} {rel(p, q):.1e}"
            for n, p, q in zip(["z", "y", "kernel", "gamma"], grads, truth, strict=False)
        )
        print(f"  gamma {name:9s} {errors}")

    print("implicit vs unroll, float32 seed problem (3x32x32, blur sigma 2.5 valid, tol 1e-8):")
    x = torch.rand(2, 3, 32, 32, generator=g)
    kernel = gaussian_kernel(2.5)
    y32 = Blur(kernel).A(x) + 0.1 * torch.randn(2, 3, 16, 16, generator=g)
    v32 = torch.randn(x.shape, generator=g)
    grads = {}
    for mode in ("unroll", "implicit"):
        kk, zz, yy = (
            kernel.clone().requires_grad_(),
            x.clone().requires_grad_(),
            y32.clone().requires_grad_(),
        )
        gm = torch.tensor([1.0, 0.5], requires_grad=True)
        h, info = prox_l2_with_info(
            Blur(kk), zz, yy, gm, solver=CG(max_iter=100, tol=1e-8), backward=mode
        )
        grads[mode] = torch.autograd.grad((h * v32).sum(), [zz, yy, gm, kk])
        print(f"  {mode:8s} forward CG {info.forward}")
    print(
        "  relative difference: "
        + ", ".join(
            f"{n} {rel(a, b):.1e}"
            for n, a, b in zip(
                ["z", "y", "gamma", "kernel"], grads["implicit"], grads["unroll"], strict=True
            )
        )
    )

    print(
        "bytes saved for backward by one prox call (1x3x32x32 float32, tol 0, all iterations run):"
    )
    kp = torch.nn.Parameter(gaussian_kernel(2.5))
    op = Blur(kp)
    z0 = torch.rand(1, 3, 32, 32, generator=g)
    y0 = op.A(torch.rand(1, 3, 32, 32, generator=g)).detach()
    gamma = torch.tensor(1e4, requires_grad=True)
    print(f"  one image = {z0.numel() * 4} bytes, kernel = {kp.numel() * 4} bytes")
    for mode in ("implicit", "checkpoint", "unroll"):
        row = []
        for n in (10, 30, 100, 300):
            zz = z0.clone().requires_grad_()
            with SavedTensorMeter() as meter:
                h = prox_l2(
                    op,
                    zz,
                    y0,
                    gamma,
                    solver=CG(max_iter=n, tol=0, stop_at_floor=False, on_failure="ignore"),
                    backward=mode,
                )
            h.sum().backward()
            row.append(f"{n}: {meter.saved_bytes}")
        print(f"  {mode:10s} " + ", ".join(row))

    print("other operators: adjoint test (float64 / complex128) and closed form vs CG:")
    c128 = torch.complex128
    mask = cartesian_mask((16, 16), acceleration=4, seed=0, dtype=F64)
    maps = smooth_coil_maps(4, (16, 16), seed=0, dtype=c128)
    cases = {
        "Inpainting": (
            Inpainting((torch.rand(3, 16, 16, generator=g) > 0.5).double()),
            (2, 3, 16, 16),
            F64,
        ),
        "Downsampling circular x2": (Downsampling(2, padding="circular"), (2, 3, 16, 16), F64),
        "CompressedSensing": (
            CompressedSensing(100, (1, 12, 12), seed=0, dtype=F64),
            (2, 1, 12, 12),
            F64,
        ),
        "MRI": (MRI(mask), (2, 1, 16, 16), c128),
        "MultiCoilMRI": (MultiCoilMRI(mask, maps), (2, 1, 16, 16), c128),
    }
    for name, (op, shape, dtype) in cases.items():
        err = adjointness_error(op, shape, dtype=dtype, generator=g)
        line = f"  {name:25s} adjoint {err:.1e}"
        z = torch.randn(shape, dtype=dtype, generator=g)
        y = op.A(torch.randn(shape, dtype=dtype, generator=g))
        h, info = op.prox_l2_with_info(z, y, 0.7, solver=tight)
        if info.mode == "closed_form":
            it = prox_l2(op, z, y, 0.7, solver=tight)
            line += f", closed form vs CG {rel(h, it):.1e}"
        print(line)

    print("bytes saved for backward, MultiCoilMRI prox (2x1x16x16 complex64, 4 coils):")
    op = MultiCoilMRI(mask.float(), maps.to(torch.complex64))
    x = torch.randn(2, 1, 16, 16, dtype=torch.complex64, generator=g)
    y = op.A(x).detach()
    for mode in ("implicit", "checkpoint", "unroll"):
        row = []
        for n in (5, 50):
            zz = x.clone().requires_grad_()
            solver = CG(max_iter=n, tol=0, stop_at_floor=False, on_failure="ignore")
            with SavedTensorMeter() as meter:
                h = prox_l2(op, zz, y + 0.1, torch.tensor(100.0), solver=solver, backward=mode)
            h.abs().sum().backward()
            row.append(f"{n}: {meter.saved_bytes}")
        print(f"  {mode:10s} " + ", ".join(row))


if __name__ == "__main__":
    main()
