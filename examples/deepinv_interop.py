"""DeepInverse unfolded network with unrolled's exact implicit prox: one line changes
=====================================================================================

The training loop below is written in deepinv's own API (its physics, its DnCNN, its
``unfolded_builder``). It runs twice from the same weights and data: once with deepinv's
``L2`` data fidelity, once with ``unrolled.interop.deepinv.L2``, whose prox is solved by
``unrolled``'s CG and differentiated exactly at the solution. For each it prints the
time per training step, the bytes autograd keeps for backward, the CG iterations of the
data steps, and the error of the first step's gradient against a float64 reference
(autograd through deepinv's own CG run to full accuracy, no implicit step at all).

Configuration: HQS with 5 iterations, DnCNN of depth 7, trainable step size and
denoiser level, Gaussian blur of sigma 2.5 with "valid" padding, noise 0.1, CG with
``max_iter=100`` and ``tol=1e-8``.

Needs ``pip install "unrolled[deepinv]"``. Run ``python examples/deepinv_interop.py``
(about a minute on two CPU cores); ``--smoke`` is a seconds-long version.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

import unrolled as ur
from unrolled.train import SavedTensorMeter

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # a CUDA torchvision on a CPU torch
    # the interop module imports deepinv (working around a torchvision built for another
    # torch than this one); its `dinv` is the deepinv module itself
    from unrolled.interop.deepinv import L2, dinv

# unfolded_builder is deprecated in deepinv 0.5 in favour of BaseOptim(unfold=True); it
# is the entry point most deepinv code still uses, and builds the same network.
warnings.filterwarnings("ignore", category=DeprecationWarning)

parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
parser.add_argument("--img-size", type=int, default=48)
parser.add_argument("--batch-size", type=int, default=8)
parser.add_argument("--steps", type=int, default=5, help="training steps per run")
parser.add_argument("--features", type=int, default=32, help="DnCNN channels")
parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
parser.add_argument("--smoke", action="store_true", help="tiny sizes, for a quick check")
args = parser.parse_args()
if args.smoke:
    args.img_size, args.batch_size, args.steps, args.features = 24, 2, 2, 8
# one thread by default: both runs then time the same work, undisturbed by thread contention
torch.set_num_threads(args.threads)

LAYERS, DEPTH, MAX_ITER, TOL = 5, 7, 100, 1e-8


# -- physics and data, in deepinv's API ------------------------------------------------------
class CountingBlur(dinv.physics.Blur):
    """deepinv's Blur, counting applications of A^T A: deepinv's CG makes one per iteration
    plus one for its initial residual."""

    calls = 0

    def A_adjoint_A(self, x, **kwargs):  # noqa: N802 - deepinv's name
        CountingBlur.calls += 1
        return super().A_adjoint_A(x, **kwargs)


kernel = dinv.physics.functional.gaussian_blur(sigma=(2.5, 2.5))  # (1, 1, 19, 19)
noise = dinv.physics.GaussianNoise(sigma=0.1, rng=torch.Generator().manual_seed(0))
physics = CountingBlur(
    filter=kernel, padding="valid", noise_model=noise, max_iter=MAX_ITER, tol=TOL
)

images = ur.data.DeadLeaves(args.img_size, channels=3, length=args.batch_size * args.steps, seed=0)
batches = [
    torch.stack([images[i * args.batch_size + j] for j in range(args.batch_size)])
    for i in range(args.steps)
]
measurements = [physics(x) for x in batches]  # y = A x + n, drawn once for both runs


def build(data_fidelity):
    torch.manual_seed(0)  # the same initial weights for every run
    denoiser = dinv.models.DnCNN(3, 3, depth=DEPTH, nf=args.features, pretrained=None)
    return dinv.unfolded.unfolded_builder(
        "HQS",
        params_algo={"stepsize": 1.0, "g_param": 0.01, "lambda": 1.0},
        trainable_params=["stepsize", "g_param"],
        data_fidelity=data_fidelity,
        prior=dinv.optim.PnP(denoiser),
        max_iter=LAYERS,
    )


def trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def step_sizes(model, grads):
    params = trainable(model)
    ids = {id(p) for p in model.params_algo["stepsize"]}
    return [g for p, g in zip(params, grads, strict=True) if id(p) in ids]


# -- the float64 reference: autograd through deepinv's CG, run to full accuracy --------------
class ConvergedL2(dinv.optim.L2):
    """deepinv's L2 with its CG run to the float64 floor (no absolute eps in its steps)."""

    def prox(self, x, y, physics, *args, gamma=1.0, **kwargs):
        return physics.prox_l2(x, y, self.norm * gamma, max_iter=1000, tol=1e-14, eps=0.0)


def reference_gradient():
    model = build(ConvergedL2()).to(torch.float64)
    blur = dinv.physics.Blur(
        filter=kernel.double(), padding="valid", implicit_backward_solver=False
    )
    x, y = batches[0].double(), measurements[0].double()
    loss = torch.nn.functional.mse_loss(model(y, blur), x)
    grads = torch.autograd.grad(loss, trainable(model), allow_unused=True)
    return model, grads


def flat(grads):
    return torch.cat([g.reshape(-1).double() for g in grads if g is not None])


def relative(grads, ref):
    a, b = flat(grads), flat(ref)
    return float((a - b).norm() / b.norm())


# -- the training loop, run once per data fidelity -------------------------------------------
def train(data_fidelity, ref_model, ref_grads):
    model = build(data_fidelity)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    times, fwd_calls, bwd_calls, saved = [], 0, 0, 0
    for step, (x, y) in enumerate(zip(batches, measurements, strict=True)):
        start = time.perf_counter()
        CountingBlur.calls = 0
        with SavedTensorMeter() as meter:
            loss = torch.nn.functional.mse_loss(model(y, physics), x)
        fwd_calls += CountingBlur.calls
        CountingBlur.calls = 0
        optimizer.zero_grad()
        loss.backward()
        bwd_calls += CountingBlur.calls
        if step == 0:  # the gradient at the initial weights, against the reference
            grads = [p.grad for p in trainable(model)]
            errors = (
                relative(grads, ref_grads),
                relative(step_sizes(model, grads), step_sizes(ref_model, ref_grads)),
            )
            saved = meter.peak_saved_bytes
        optimizer.step()
        times.append(time.perf_counter() - start)
    solves = LAYERS * args.steps
    iterations = (fwd_calls / solves - 1, bwd_calls / solves - 1)
    if isinstance(data_fidelity, L2):  # unrolled's own count (its CG reports it)
        iterations = (data_fidelity.stats.mean_forward, data_fidelity.stats.mean_backward)
    steady = times[1:] or times
    return sum(steady) / len(steady), saved, iterations, errors, float(loss.detach())


ref_model, ref_grads = reference_gradient()
runs = {
    "deepinv L2": dinv.optim.L2(),
    "unrolled L2": L2(solver=ur.CG(max_iter=MAX_ITER, tol=TOL)),  # the one line that changes
}
print(
    f"deepinv {dinv.__version__} unfolded HQS ({LAYERS} iterations, DnCNN depth {DEPTH}, "
    f"{args.features} features), blur sigma 2.5 valid, noise 0.1, images "
    f"{args.batch_size}x3x{args.img_size}x{args.img_size}, float32, {args.steps} steps"
)
print(
    f"{'data step':<13}{'s/step':>8}{'saved for bwd':>15}{'CG fwd':>8}{'CG bwd':>8}"
    f"{'grad err (all)':>16}{'grad err (steps)':>18}{'last loss':>11}"
)
for name, fidelity in runs.items():
    seconds, saved, (fwd, bwd), (err_all, err_steps), last = train(fidelity, ref_model, ref_grads)
    print(
        f"{name:<13}{seconds:>8.3f}{saved / 2**20:>12.2f} MB{fwd:>8.1f}{bwd:>8.1f}"
        f"{err_all:>16.1e}{err_steps:>18.1e}{last:>11.5f}"
    )
print(
    "CG: mean iterations per solve (forward / backward). grad err: relative error of the "
    "first step's gradient (all trainable parameters / the step sizes) against float64."
)
