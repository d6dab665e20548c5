"""Learned operator: a network predicts the blur kernel from the measurement
============================================================================

Blind deblurring, unfolded. A small CNN reads the blurred image ``y`` and predicts
one kernel per sample (positive, summing to 1: a softmax over its ``kh * kw``
entries). The reconstruction runs a few half-quadratic-splitting steps::

    z_k = x_k - D(x_k)                      (a small learned residual denoiser)
    x_{k+1} = prox_l2(Blur(kernel), z_k, y, gamma)   (CG, implicit backward)

so the loss's gradient reaches the kernel network through the implicit prox: the
kernel is a non-leaf tensor held by ``Blur``, and the implicit backward routes its
gradient on to the network that made it. The script first checks that the kernel
network's weights get the same gradients from the implicit backward as from
backpropagating through every CG iteration (float64, tight CG tolerance), then
trains both networks for ``--steps`` steps, and shows the loss and the predicted kernels::

    PYTHONPATH=src python examples/learned_operator.py --steps 100
"""

from __future__ import annotations

import argparse
import time

import matplotlib.pyplot as plt
import torch
from torch import Tensor, nn

from unrolled.linalg import CG, prox_l2
from unrolled.physics import Blur, gaussian_kernel

KERNEL = 5  # predicted kernels are KERNEL x KERNEL


# %%
# The networks
# ------------
# ``KernelNet`` predicts one kernel per measurement; ``BlindDeblur`` runs a few HQS steps whose
# data step is the CG-solved prox with that kernel, differentiated implicitly.


class KernelNet(nn.Module):
    """``y (B, 1, H, W) -> kernel (B, 1, k, k)``, positive entries summing to 1."""

    def __init__(self, size: int = KERNEL, width: int = 8):
        super().__init__()
        self.size = size
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(width, size * size)

    def forward(self, y: Tensor) -> Tensor:
        pooled = self.features(y).mean(dim=(-2, -1))  # global average pooling
        weights = torch.softmax(self.head(pooled), dim=-1)
        return weights.reshape(-1, 1, self.size, self.size)


class BlindDeblur(nn.Module):
    """Unfolded HQS with a predicted blur kernel and a learned residual denoiser."""

    def __init__(self, iterations: int = 3, width: int = 8):
        super().__init__()
        self.kernel_net = KernelNet()
        self.denoiser = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 3, padding=1)
        )
        self.log_gamma = nn.Parameter(torch.zeros(()))
        self.iterations = iterations

    def forward(self, y: Tensor, *, solver: CG, backward: str = "implicit") -> Tensor:
        physics = Blur(self.kernel_net(y), padding="circular")
        gamma = self.log_gamma.exp()
        x = physics.A_adjoint(y)
        for _ in range(self.iterations):
            z = x - self.denoiser(x)
            x = prox_l2(physics, z, y, gamma, solver=solver, backward=backward)
        return x


# %%
# Data
# ----
# Smooth random images, each blurred by a kernel of its own, plus a little noise.


def make_data(
    batch: int,
    size: int,
    *,
    seed: int,
    dtype: torch.dtype,
    noise: float = 0.01,
    return_kernels: bool = False,
):
    """Smooth random images, each blurred by its own Gaussian kernel (sigma in [0.6, 1.4]).

    Returns ``(x, y)``, and the kernels ``(B, 1, k, k)`` too when ``return_kernels``.
    """
    gen = torch.Generator().manual_seed(seed)
    white = torch.rand(batch, 1, size, size, generator=gen, dtype=torch.float64)
    x = Blur(gaussian_kernel(1.0, size=5, dtype=torch.float64), padding="circular").A(white)
    x = (x - x.amin(dim=(-2, -1), keepdim=True)) / (
        x.amax(dim=(-2, -1), keepdim=True) - x.amin(dim=(-2, -1), keepdim=True)
    )
    sigmas = 0.6 + 0.8 * torch.rand(batch, generator=gen, dtype=torch.float64)
    kernels = torch.stack(
        [gaussian_kernel(float(s), size=KERNEL, dtype=torch.float64) for s in sigmas]
    )
    y = Blur(kernels[:, None], padding="circular").A(x)
    y = y + noise * torch.randn(y.shape, generator=gen, dtype=torch.float64)
    if return_kernels:
        return x.to(dtype), y.to(dtype), kernels[:, None].to(dtype)
    return x.to(dtype), y.to(dtype)


# %%
# The check: implicit and unrolled gradients agree
# ------------------------------------------------
# In float64 with a tight CG tolerance the implicit backward must give every weight, the
# kernel network's included, the gradient of backpropagating through all CG iterations.


def gradient_check(*, seed: int = 0, tol: float = 1e-14) -> dict[str, float]:
    """Gradients of the training loss for every weight, implicit vs unrolled backward.

    float64, CG to ``tol``: the two must agree to the accuracy of the forward solve.
    Returns the relative difference ``||g_implicit - g_unroll|| / ||g_unroll||`` for the
    kernel network, the denoiser and gamma.
    """
    torch.manual_seed(seed)
    model = BlindDeblur().double()
    x, y = make_data(2, 16, seed=seed, dtype=torch.float64)
    solver = CG(max_iter=500, tol=tol)
    groups = {
        "kernel_net": list(model.kernel_net.parameters()),
        "denoiser": list(model.denoiser.parameters()),
        "gamma": [model.log_gamma],
    }
    params = [p for ps in groups.values() for p in ps]
    grads = {}
    for backward in ("implicit", "unroll"):
        loss = ((model(y, solver=solver, backward=backward) - x) ** 2).mean()
        grads[backward] = torch.autograd.grad(loss, params)
    result, start = {}, 0
    for name, ps in groups.items():
        gi = torch.cat([g.reshape(-1) for g in grads["implicit"][start : start + len(ps)]])
        gu = torch.cat([g.reshape(-1) for g in grads["unroll"][start : start + len(ps)]])
        result[name] = float((gi - gu).norm() / gu.norm())
        start += len(ps)
    return result


# %%
# Training and figures
# --------------------


def train(
    steps: int, *, seed: int = 0, batch: int = 8, size: int = 16, lr: float = 3e-3
) -> tuple[BlindDeblur, list[float]]:
    """Train both networks (float32, implicit prox); returns the model and the loss per step."""
    torch.manual_seed(seed)
    model = BlindDeblur()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    solver = CG(max_iter=100, tol=1e-5)
    losses = []
    for step in range(steps):
        x, y = make_data(batch, size, seed=seed + 1 + step, dtype=torch.float32)
        loss = ((model(y, solver=solver) - x) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model, losses


def plot_results(model: BlindDeblur, losses: list[float], *, seed: int = 0, n: int = 4) -> None:
    """The training loss, then for ``n`` new images: the true and predicted kernels, the
    measurement, the reconstruction and the truth."""
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.semilogy(range(1, len(losses) + 1), losses)
    ax.set(xlabel="step", ylabel="training loss (MSE)", title="Blind deblurring, implicit prox")
    fig.tight_layout()

    x, y, kernels = make_data(n, 16, seed=10_000 + seed, dtype=torch.float32, return_kernels=True)
    with torch.no_grad():
        predicted = model.kernel_net(y)
        x_hat = model(y, solver=CG(max_iter=100, tol=1e-5))
    rows = [
        ("true kernel", kernels),
        ("predicted kernel", predicted),
        ("measurement", y),
        ("reconstruction", x_hat),
        ("truth", x),
    ]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.6 * n, 1.6 * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows):
        for i in range(n):
            axes[r, i].imshow(images[i, 0].numpy(), cmap="gray")
            axes[r, i].set_xticks([])
            axes[r, i].set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.tight_layout()


# %%
# Running it
# ----------
# The gradient check, then training, then the figures: the loss, and for new images the true
# and predicted kernels, the measurement, the reconstruction and the truth.


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="training steps (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # Tensors here are tiny: one thread is fastest, and robust to a busy machine.
    torch.set_num_threads(1)

    check = gradient_check(seed=args.seed)
    print("implicit vs unrolled gradients (float64, CG tol 1e-14), relative difference:")
    for name, rel in check.items():
        print(f"  {name:10s} {rel:.2e}")
    worst = max(check.values())
    print(f"  -> {'OK' if worst <= 1e-8 else 'MISMATCH'} (worst {worst:.2e}, bound 1e-8)")

    if args.steps > 0:
        start = time.perf_counter()
        model, losses = train(args.steps, seed=args.seed)
        shown = sorted({0, len(losses) // 2, len(losses) - 1})
        for i in shown:
            print(f"step {i + 1:4d}  mse {losses[i]:.5f}")
        print(f"trained {args.steps} steps in {time.perf_counter() - start:.1f} s")
        plot_results(model, losses, seed=args.seed)
        plt.show()


if __name__ == "__main__":
    main()
