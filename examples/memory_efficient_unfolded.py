"""An unfolded network whose data step's backward takes O(1) memory
==================================================================

Train an unfolded network whose data step is solved by CG, with an O(1)-memory backward.
This is ``unrolled demo`` written out, to be read top to bottom:

1. a measurement model (blur + noise),
2. clean training images,
3. an unfolded HQS network: a CG-solved data step alternating with a learned denoiser,
4. the data fidelity, where the backward mode is chosen,
5. training with a hand-written loop,
6. measuring what each backward mode costs in memory, and checking the gradients agree.

Run it as ``python examples/memory_efficient_unfolded.py`` (about a minute on a laptop CPU);
``--help`` lists the sizes you can shrink or grow.
"""

from __future__ import annotations

import argparse
import time

import matplotlib.pyplot as plt
import torch

import unrolled as ur
from unrolled.train import PeakMemoryMeter, SavedTensorMeter, psnr

parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
parser.add_argument("--img-size", type=int, default=32)
parser.add_argument("--num-images", type=int, default=32)
parser.add_argument("--batch-size", type=int, default=8)
parser.add_argument("--steps", type=int, default=20, help="training steps")
parser.add_argument("--layers", type=int, default=5)
parser.add_argument("--depth", type=int, default=7)
parser.add_argument("--features", type=int, default=32)
parser.add_argument("--blur-sigma", type=float, default=2.5)
args = parser.parse_args()

torch.manual_seed(0)

# %%
# 1. Physics
# ----------
# ``y = k * x + n``: a Gaussian blur with "valid" padding (only the outputs whose kernel lies
# inside the image are kept, so no boundary assumption is made, and y is smaller than x),
# plus white noise. The noise has its own seeded generator, so measurements are repeatable.
physics = ur.physics.Blur(
    ur.physics.gaussian_kernel(args.blur_sigma),
    padding="valid",
    noise=ur.physics.GaussianNoise(sigma=0.1, generator=0),
)

# %%
# 2. Data
# -------
# Dead leaves are procedural natural-like images: nothing to download, same images
# everywhere. (``ur.data.SampleImages`` gives real photographs when scikit-image is installed.)
train_set = ur.data.DeadLeaves(args.img_size, channels=3, length=args.num_images, seed=0)
test_set = ur.data.DeadLeaves(args.img_size, channels=3, length=args.batch_size, seed=1)
loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
x_test = torch.stack([test_set[i] for i in range(len(test_set))])
y_test = physics(x_test)


# %%
# 3 + 4. Model and fidelity
# -------------------------
# HQS alternates ``x_k = prox_{gamma_k f}(z_{k-1})`` (the data step, a linear solve by CG)
# and ``z_k = D(x_k, sigma_k)`` (the denoiser). The data step's backward is set on the
# fidelity:
#
# - ``"unroll"``: autograd records every CG iteration, so memory grows with the iterations;
# - ``"implicit"``: the gradient is one more CG solve at the solution, so memory is
#   independent of the iterations, and exact when the forward solve converged (tol 1e-8).
#
# ``checkpoint_layers=True`` also recomputes each layer's denoiser in backward, so only one
# layer's activations are alive at a time: memory no longer grows with the layers either.
def make_model(backward: str, checkpoint_layers: bool = False) -> ur.unfolded.HQS:
    torch.manual_seed(0)  # every variant starts from the same weights
    fidelity = ur.L2(solver=ur.CG(max_iter=100, tol=1e-8), backward=backward)
    return ur.unfolded.HQS(
        layers=args.layers,
        denoiser=ur.models.DnCNN(3, 3, depth=args.depth, features=args.features),
        fidelity=fidelity,
        stepsize=1.0,  # gamma_k, learned (kept positive: stored as its log)
        sigma=0.1,  # the denoiser's noise level sigma_k, learned too
        trainable=("stepsize", "sigma"),
        checkpoint_layers=checkpoint_layers,
    )


model = make_model("implicit")

# %%
# 5. Training
# -----------
# A plain loop: measure, reconstruct, compare with the truth, step. ``ur.train.Trainer`` does
# the same with logging, checkpoints, resume and plots.
optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
with torch.no_grad():
    x_before = model(y_test, physics)
print(f"test PSNR before training: {psnr(x_before, x_test).mean():.2f} dB")
losses = []
step = 0
start = time.perf_counter()
while step < args.steps:
    for x in loader:
        y = physics(x)  # fresh noise every step
        loss = (model(y, physics) - x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        step += 1
        if step % 5 == 0 or step == 1:
            stats = model.fidelity.stats  # CG work, counted since the last reset
            print(
                f"step {step:3d}  loss {loss.item():.5f}  CG iterations per solve: "
                f"forward {stats.mean_forward:.1f}, backward {stats.mean_backward:.1f}"
            )
        model.fidelity.stats.reset()
        if step == args.steps:
            break
print(f"{args.steps} steps in {time.perf_counter() - start:.1f} s")
with torch.no_grad():
    print(f"test PSNR after training:  {psnr(model(y_test, physics), x_test).mean():.2f} dB")
print("learned step sizes:", [round(v, 3) for v in model.stepsize.tolist()])
print("learned sigmas:    ", [round(v, 4) for v in model.sigma.tolist()])

# %%
# The training loss.
fig, ax = plt.subplots(figsize=(5, 3))
ax.semilogy(range(1, len(losses) + 1), losses)
ax.set(xlabel="step", ylabel="training loss (MSE)", title="Training, implicit backward")
fig.tight_layout()

# %%
# A held-out image: the measurement (smaller than the image: valid padding), the network's
# output before and after training, and the truth.
with torch.no_grad():
    x_after = model(y_test, physics)
panels = [
    ("measurement y", y_test[0]),
    (f"before training, {psnr(x_before, x_test)[0]:.1f} dB", x_before[0]),
    (f"after training, {psnr(x_after, x_test)[0]:.1f} dB", x_after[0]),
    ("truth", x_test[0]),
]
fig, axes = plt.subplots(1, 4, figsize=(11, 3))
for ax, (title, image) in zip(axes, panels, strict=True):
    ax.imshow(image.clamp(0, 1).permute(1, 2, 0).numpy())
    ax.set_title(title, fontsize=9)
    ax.axis("off")
fig.tight_layout()


# %%
# 6. What each backward mode costs
# --------------------------------
# ``PeakMemoryMeter`` records every allocation and free over forward *and* backward (on CPU
# via the profiler, on CUDA with ``max_memory_allocated``), so what checkpointing recomputes
# during backward is counted. ``SavedTensorMeter`` counts the bytes autograd holds for
# backward.
x = next(iter(loader))
y = physics(x)
print("\nmemory of one training step (forward + backward):")
grads, peaks, held = {}, {}, {}
for name, backward, ckpt in [
    ("unroll", "unroll", False),
    ("implicit", "implicit", False),
    ("implicit + layer checkpointing", "implicit", True),
]:
    variant = make_model(backward, ckpt)
    with PeakMemoryMeter("cpu") as peak:
        with SavedTensorMeter() as saved:
            loss = (variant(y, physics) - x).square().mean()
        loss.backward()
    grads[name] = torch.cat([p.grad.flatten() for p in variant.parameters()])
    peaks[name], held[name] = peak.peak_bytes / 1e6, saved.peak_saved_bytes / 1e6
    print(
        f"  {name:<31} peak {peak.peak_bytes / 1e6:7.2f} MB   "
        f"held for backward {saved.peak_saved_bytes / 1e6:7.2f} MB"
    )

# %%
# The gradients agree: the implicit one is exact at the solution, and CG solved to 1e-8.
reference = grads["unroll"]
for name, g in grads.items():
    error = ((g - reference).norm() / reference.norm()).item()
    print(f"  gradient of {name:<31} relative difference to unroll: {error:.1e}")

fig, ax = plt.subplots(figsize=(7, 3))
names = list(peaks)
ax.barh([n + " (peak)" for n in names], [peaks[n] for n in names], color="tab:blue")
ax.barh([n + " (held)" for n in names], [held[n] for n in names], color="tab:orange")
ax.invert_yaxis()
ax.set(xlabel="MB", title="Memory of one training step")
fig.tight_layout()
plt.show()
