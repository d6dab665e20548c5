"""What each choice of the training recipe buys, in dB over the best classical baseline.

One run trains the demo's architecture (unfolded HQS, 5 layers, shared DnCNN depth 7 x 32
features, trainable per-layer stepsize and sigma; Gaussian blur sigma 2.5, valid padding,
noise 0.1; CG max_iter 100, tol 1e-8, implicit backward) for ``--steps`` Adam steps of
batch 8 and scores it on 6 held-out 128x128 crops of scikit-image's evaluation photographs
against the classical baselines, whose weights are picked on 16 crops of its training
photographs. It prints one JSON line.

    python -m benchmarks.recipe --name plain --init adjoint --sigma 0.01 --crop 32 \\
        --lr 5e-4 --sched const --steps 400 --threads 1

``--load-model FILE`` starts from a saved model instead (fine-tuning); ``--photos DIR``
also scores on a folder's images, against baselines picked on those very images.

docs/training-recipe.md lists the runs and their results.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

import unrolled as ur
from unrolled.data import DeadLeaves, ImageFolder, Interleaved, SampleImages
from unrolled.evaluation import determined_region, fit_baselines, score_methods
from unrolled.train import make_loader
from unrolled.train.pretrain import pretrain_denoiser
from unrolled.train.step import make_optimizer

NOISE = 0.1
POOL = 100_000  # training crops to draw from (random crops: effectively endless)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--denoiser", choices=("dncnn", "unet"), default="dncnn")
    p.add_argument("--features", type=int, default=32, help="DnCNN features, U-Net base")
    p.add_argument("--depth", type=int, default=7, help="DnCNN depth")
    p.add_argument("--levels", type=int, default=3, help="U-Net levels")
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--scalar-lr", type=float, default=None, help="default: --lr")
    p.add_argument("--freeze-denoiser", action="store_true", help="train the scalars only")
    p.add_argument("--warmup", type=int, default=0, help="steps of linear learning-rate warm-up")
    p.add_argument("--sched", choices=("cosine", "const"), default="cosine")
    p.add_argument(
        "--init", choices=("adjoint", "normalized_adjoint", "smooth"), default="normalized_adjoint"
    )
    p.add_argument("--init-weight", type=float, default=None, help="with --init smooth")
    p.add_argument("--sigma", type=float, default=0.1, help="initial denoiser level")
    p.add_argument("--stepsize", type=float, default=1.0)
    p.add_argument("--data", choices=("samples", "deadleaves", "mix"), default="samples")
    p.add_argument("--pretrain", type=int, default=0, help="denoiser pretraining steps")
    p.add_argument("--pretrain-lr", type=float, default=1e-3)
    p.add_argument("--pretrain-levels", choices=("uniform", "log-uniform"), default="uniform")
    p.add_argument("--pretrain-sigma-min", type=float, default=0.0)
    p.add_argument("--pretrain-crop", type=int, default=None, help="default: --crop")
    p.add_argument("--val-crop", type=int, default=128, help="baselines' validation crops")
    p.add_argument("--load", help="start from this state_dict (from --save)")
    p.add_argument(
        "--load-denoiser",
        help="take the denoiser's weights from this saved model (unrolled.load), e.g. the "
        "shipped one, so that the unfolded network around it can differ",
    )
    p.add_argument(
        "--load-model",
        help="start from this saved model (unrolled.load): its architecture, initial "
        "estimate, denoiser and scalars; the architecture flags are then ignored",
    )
    p.add_argument(
        "--photos",
        help="also score on the images of this folder (centre crops of --photos-size), "
        "against baselines whose weights are picked on those very images",
    )
    p.add_argument("--photos-size", type=int, default=256)
    p.add_argument("--loss", choices=("full", "determined"), default="full")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save", help="write the trained state_dict here")
    return p.parse_args()


def measured(physics, dataset, n: int, batch: int) -> list:
    """``(x, y)`` batches of the first ``n`` items, noise from a fixed generator."""
    g = torch.Generator().manual_seed(123)
    xs = torch.stack([dataset[i] for i in range(n)])
    pairs = []
    for i in range(0, n, batch):
        x = xs[i : i + batch]
        y = physics.A(x)
        pairs.append((x, y + NOISE * torch.randn(y.shape, generator=g)))
    return pairs


def best_baselines(physics, validation: list, test: list) -> dict:
    """The best score of the baselines, each fitted on ``validation``, on ``test``."""
    baselines = fit_baselines(physics, validation)
    scores = score_methods(
        {b.label: (lambda y, b=b: b(physics, y)) for b in baselines}, physics, test
    )
    return {m: max(s[m] for s in scores.values()) for m in ("psnr", "psnr_determined")}


def gains(scores: dict, best: dict) -> dict:
    """``scores`` over the best baseline's, rounded."""
    return {
        "vs_best_baseline": round(scores["psnr"] - best["psnr"], 2),
        "vs_best_baseline_determined": round(
            scores["psnr_determined"] - best["psnr_determined"], 2
        ),
        "ssim": round(scores["ssim"], 3),
    }


def learning_rate_factor(step: int, steps: int, warmup: int, schedule: str) -> float:
    """The learning rate at ``step`` over its base: linear warm-up, then cosine or flat."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "const":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))


def training_images(kind: str, crop: int):
    photos = SampleImages("train", crop=crop, length=POOL, seed=0)
    leaves = DeadLeaves(crop, 3, POOL, seed=0)
    return {"samples": photos, "deadleaves": leaves, "mix": Interleaved([photos, leaves])}[kind]


def main() -> None:
    a = parse()
    if a.load_model and (a.load or a.load_denoiser):
        raise SystemExit("--load-model: expected alone, got --load or --load-denoiser too")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    physics = ur.physics.Blur(
        ur.physics.gaussian_kernel(2.5), padding="valid", noise=ur.physics.GaussianNoise(NOISE)
    )
    validation = measured(physics, SampleImages("train", crop=a.val_crop, length=16, seed=5), 16, 4)
    test = measured(
        physics, SampleImages("eval", crop=128, length=6, random_crops=True, seed=1), 6, 3
    )
    best = best_baselines(physics, validation, test)
    photos = []
    if a.photos:
        folder = ImageFolder(a.photos, crop=a.photos_size, train=False)
        photos = measured(physics, folder, len(folder), 4)
        best_on_photos = best_baselines(physics, photos, photos)

    train = training_images(a.data, a.crop)
    denoiser = (
        ur.models.DnCNN(3, 3, depth=a.depth, features=a.features)
        if a.denoiser == "dncnn"
        else ur.models.UNet(3, 3, base=a.features, levels=a.levels)
    )
    model = ur.unfolded.HQS(
        layers=a.layers,
        denoiser=denoiser,
        fidelity=ur.L2(solver=ur.CG(max_iter=100, tol=1e-8)),
        stepsize=a.stepsize,
        sigma=a.sigma,
        init=a.init,
        init_weight=a.init_weight,
    )

    if a.load_model:
        model = ur.load(a.load_model)
        # The same solver as every other run (a saved model keeps the one it trained with),
        # and the plain network: the ensembles are scored apart below.
        model.fidelity.solver = ur.CG(max_iter=100, tol=1e-8)
        model.ensemble = None
        denoiser = model.priors[0].denoiser
        model.train()

    def score_net(pairs=test) -> dict:
        """The network's scores on ``pairs`` (default: the held-out crops)."""
        return score_methods({"net": lambda y: model(y, physics)}, physics, pairs)["net"]

    def score_on_photos() -> dict | None:
        return gains(score_net(photos), best_on_photos) if photos else None

    if a.load:
        model.load_state_dict(torch.load(a.load, weights_only=True))
    if a.load_denoiser:
        denoiser.load_state_dict(ur.load(a.load_denoiser).priors[0].denoiser.state_dict())
    before = None
    if a.load_model:
        model.eval()
        before = {"held_out": gains(score_net(), best), "photos": score_on_photos()}
        model.train()
    start = time.time()
    pretrained = None
    if a.pretrain:
        images = train if a.pretrain_crop is None else training_images(a.data, a.pretrain_crop)
        loader = make_loader(images, a.batch, seed=0)
        pretrain_denoiser(
            denoiser,
            loader,
            steps=a.pretrain,
            sigma_max=2 * NOISE,
            sigma_min=a.pretrain_sigma_min,
            levels=a.pretrain_levels,
            lr=a.pretrain_lr,
            seed=0,
        )
        pretrained = score_net()
        pretrained = {k: round(v, 3) for k, v in pretrained.items()}
        pretrained["time_s"] = round(time.time() - start)
    if a.freeze_denoiser:
        denoiser.requires_grad_(False)
    optimizer = make_optimizer(None, a.lr, model, a.scalar_lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: learning_rate_factor(k, a.steps, a.warmup, a.sched)
    )
    region = determined_region(physics, (a.crop, a.crop)).float()
    for step in range(a.steps):
        g = torch.Generator().manual_seed(step)
        idx = torch.randint(0, len(train), (a.batch,), generator=g)
        x = torch.stack([train[int(i)] for i in idx])
        y = physics.A(x) + NOISE * torch.randn(physics.output_shape(x.shape), generator=g)
        err = (model(y, physics) - x).square()
        loss = (
            err.mean()
            if a.loss == "full"
            else (err * region).sum() / (region.sum() * err[:, :, 0, 0].numel())
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    seconds = time.time() - start
    model.eval()
    net = score_net()
    # The same network evaluated as a self-ensemble (each denoiser call averaged over
    # quarter turns, and mirror images): no training, a few times the evaluation's cost.
    on_photos = score_on_photos()
    ensembles = {}
    for group in ur.models.ENSEMBLES:
        model.ensemble = group
        ensembles[group] = gains(score_net(), best)
        if photos:
            ensembles[group]["photos"] = score_on_photos()
    model.ensemble = None
    result = {
        "name": a.name,
        "time_s": round(seconds),
        "psnr": round(net["psnr"], 2),
        "psnr_determined": round(net["psnr_determined"], 2),
        "ssim": round(net["ssim"], 3),
        "vs_best_baseline": round(net["psnr"] - best["psnr"], 2),
        "vs_best_baseline_determined": round(net["psnr_determined"] - best["psnr_determined"], 2),
        "best_baseline": best,
        "after_pretraining": pretrained,
        "loaded_model": before,
        "photos": on_photos,
        "ensembles": ensembles,
        "stepsize": [round(v, 3) for v in model.stepsize.tolist()],
        "sigma": [round(v, 4) for v in model.sigma.tolist()],
        "args": vars(a),
    }
    print(json.dumps(result))
    if a.save:
        torch.save(model.state_dict(), a.save)


if __name__ == "__main__":
    main()
