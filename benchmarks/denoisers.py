"""Gaussian denoising by candidate denoisers and training images, at equal pretraining steps.

The unfolded network of the demo's problem spends its layers' denoiser near noise level
0.035 (a third of the measurement's noise, see docs/training-recipe.md), so a denoiser that
does better there should make a better deblurrer. One run pretrains one candidate as the
shipped recipe does (batch 8, 64x64 crops of scikit-image's training photographs and dead
leaves in turn, noise levels uniform in [0, 0.2], Adam 1e-3) and prints one JSON line: its
PSNR at noise 0.035 and 0.1 on 6 held-out 128x128 crops of scikit-image's evaluation
photographs and, with ``--photos DIR``, on centre crops of the images of a folder.

    python -m benchmarks.denoisers --name dncnn --steps 2500
    python -m benchmarks.denoisers --name shuffled --denoiser shuffled --features 64
    python -m benchmarks.denoisers --name scales --max-scale 4

Candidates:

- ``dncnn``: the library's DnCNN (``--depth`` convolutions of ``--features`` channels).
- ``shuffled``: the same stack run on the four half-resolution sub-images of each channel
  (pixel unshuffle, as FFDNet does), with the noise level as one more channel, and shuffled
  back: a quarter of the cost per convolution at equal width, twice the receptive field.
- ``--max-scale S``: the training photographs are first shrunk by a factor drawn
  log-uniformly in ``[1, S]`` (antialiased), so their content comes at more scales.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

import unrolled as ur
from unrolled.data import DeadLeaves, ImageFolder, Interleaved, SampleImages
from unrolled.data._common import random_crop
from unrolled.models._base import NoiseLevelDenoiser
from unrolled.train import make_loader
from unrolled.train.pretrain import pretrain_denoiser

CROP = 64
POOL = 100_000
LEVELS = (0.035, 0.1)


class ShuffledDnCNN(NoiseLevelDenoiser):
    """A residual DnCNN on the ``factor**2`` sub-images of each channel (pixel unshuffle)."""

    def __init__(self, channels: int, depth: int, features: int, factor: int = 2) -> None:
        super().__init__(channels, channels, bias=True, residual=True, last_init_scale=0.1)
        self.factor = factor
        inner = channels * factor**2
        layers: list[nn.Module] = []
        width = inner + 1
        for _ in range(depth - 1):
            layers += [nn.Conv2d(width, features, 3, padding=1), nn.ReLU(inplace=True)]
            width = features
        layers.append(nn.Conv2d(width, inner, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def network(self, t: Tensor) -> Tensor:
        f = self.factor
        h, w = t.shape[-2:]
        # Sides that the factor does not divide are padded by repetition and cropped back.
        t = F.pad(t, (0, (-w) % f, 0, (-h) % f), mode="replicate")
        image, level = t[:, :-1], t[:, -1:, ::f, ::f]
        out = self.net(torch.cat([F.pixel_unshuffle(image, f), level], 1))
        return F.pixel_shuffle(out, f)[..., :h, :w]


class RescaledPhotos(Dataset):
    """Random ``CROP`` crops of scikit-image's training photographs, each first shrunk by a
    factor log-uniform in ``[1, max_scale]`` (capped so that the crop still fits)."""

    def __init__(self, max_scale: float) -> None:
        photos = SampleImages("train")
        self.images = [photos[i] for i in range(len(photos))]
        self.max_scale = max_scale

    def __len__(self) -> int:
        return POOL

    def __getitem__(self, index: int) -> Tensor:
        g = torch.Generator().manual_seed(index)
        image = self.images[index % len(self.images)]
        h, w = image.shape[-2:]
        top = min(self.max_scale, min(h, w) / CROP)
        scale = math.exp(float(torch.rand((), generator=g)) * math.log(top))
        size = (max(CROP, round(h / scale)), max(CROP, round(w / scale)))
        if size != (h, w):
            image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0]
            image = image.clamp(0, 1)
        return random_crop(image, (CROP, CROP), g, f"photograph {index % len(self.images)}")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--denoiser", choices=("dncnn", "shuffled"), default="dncnn")
    p.add_argument("--depth", type=int, default=7)
    p.add_argument("--features", type=int, default=32)
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--max-scale", type=float, default=1.0)
    p.add_argument("--photos", help="also score on centre crops of this folder's images")
    p.add_argument("--photos-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def denoising_psnr(denoiser: nn.Module, images: Tensor, seed: int) -> dict[str, float]:
    """Mean PSNR of ``denoiser`` at each of ``LEVELS`` on ``images`` (fixed noise)."""
    g = torch.Generator().manual_seed(seed)
    scores = {}
    with torch.no_grad():
        for level in LEVELS:
            noisy = images + level * torch.randn(images.shape, generator=g)
            mse = (denoiser(noisy, level) - images).square().mean((1, 2, 3))
            scores[str(level)] = round(float((-10 * mse.log10()).mean()), 3)
    return scores


def main() -> None:
    a = parse()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.denoiser == "dncnn":
        denoiser: nn.Module = ur.models.DnCNN(3, 3, depth=a.depth, features=a.features)
    else:
        denoiser = ShuffledDnCNN(3, a.depth, a.features)
    photos = (
        SampleImages("train", crop=CROP, length=POOL, seed=0)
        if a.max_scale <= 1
        else RescaledPhotos(a.max_scale)
    )
    images = Interleaved([photos, DeadLeaves(CROP, 3, POOL, seed=0)])
    start = time.time()
    pretrain_denoiser(
        denoiser, make_loader(images, 8, seed=0), steps=a.steps, sigma_max=0.2, lr=1e-3, seed=0
    )
    seconds = time.time() - start
    denoiser.eval()
    held_out = SampleImages("eval", crop=128, length=6, random_crops=True, seed=1)
    result = {
        "name": a.name,
        "time_s": round(seconds),
        "parameters": sum(p.numel() for p in denoiser.parameters()),
        "held_out": denoising_psnr(denoiser, torch.stack([held_out[i] for i in range(6)]), 7),
        "args": vars(a),
    }
    if a.photos:
        folder = ImageFolder(a.photos, crop=a.photos_size, train=False)
        stack = torch.stack([folder[i] for i in range(len(folder))])
        result["photos"] = denoising_psnr(denoiser, stack, 8)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
