"""Scores of several reconstruction methods on the same images and measurements."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from ..linalg.operator import LinearOperator
from .metrics import psnr, ssim
from .regions import determined_region

__all__ = ["METRICS", "format_scores", "image_scores", "score_methods"]

#: what :func:`image_scores` measures per image, and :func:`score_methods` averages
METRICS = ("psnr", "psnr_determined", "ssim")


def image_scores(x_hat: Tensor, x: Tensor, region: Tensor, max_val: float = 1.0) -> Tensor:
    """``(3, B)`` float64: per image, PSNR over the whole image, PSNR over ``region`` (the
    determined region) and SSIM (NaN for images smaller than SSIM's 11x11 window)."""
    small = min(x.shape[-2:]) < 11
    quality = (
        torch.full((x.shape[0],), float("nan"), dtype=torch.float64, device=x.device)
        if small
        else ssim(x_hat, x, max_val).double()
    )
    return torch.stack(
        [
            psnr(x_hat, x, max_val).double(),
            psnr(x_hat, x, max_val, region=region).double(),
            quality,
        ]
    )


def score_methods(
    methods: Mapping[str, Callable[[Tensor], Tensor]],
    physics: LinearOperator,
    pairs: Sequence[tuple[Tensor, Tensor]],
    *,
    max_val: float = 1.0,
) -> dict[str, dict[str, float]]:
    """Mean PSNR (whole image), PSNR over the determined region and SSIM of each method.

    Args:
        methods: name -> ``y -> x_hat``.
        physics: the measurement operator (for the determined region).
        pairs: ``(x, y)`` batches; images of different sizes go in different batches.
        max_val: peak value of the images.

    Returns:
        ``{name: {"psnr", "psnr_determined", "ssim", "n"}}``, means over every image.
    """
    totals = {name: torch.zeros(3, dtype=torch.float64) for name in methods}
    count = 0
    for x, y in pairs:
        region = determined_region(physics, x.shape).to(x.device)
        for name, method in methods.items():
            with torch.no_grad():
                x_hat = method(y)
            totals[name] += image_scores(x_hat, x, region, max_val).sum(1).cpu()
        count += x.shape[0]
    if count == 0:
        raise ValueError("pairs: expected at least one (x, y) batch, got none")
    return {
        name: {**dict(zip(METRICS, (t / count).tolist(), strict=True)), "n": count}
        for name, t in totals.items()
    }


def format_scores(scores: Mapping[str, Mapping[str, float]], *, best_of: Sequence[str] = ()) -> str:
    """A text table, one line per method; ``best_of`` names the baselines whose best
    PSNR the other lines are compared with (a ``vs best baseline`` column)."""
    unknown = [b for b in best_of if b not in scores]
    if unknown:
        raise ValueError(f"best_of: expected names among {list(scores)}, got {unknown}")
    ref = (
        {m: max(scores[b][m] for b in best_of) for m in ("psnr", "psnr_determined")}
        if best_of
        else None
    )
    width = max(len(n) for n in scores)
    head = f"{'method':<{width}}  PSNR full  PSNR determined  SSIM"
    head += "   vs best baseline (full / determined)" if ref else ""
    lines = [head]
    for name, s in scores.items():
        line = (
            f"{name:<{width}}  {s['psnr']:6.2f} dB  {s['psnr_determined']:9.2f} dB  {s['ssim']:.3f}"
        )
        if ref and name not in best_of:
            line += (
                f"   {s['psnr'] - ref['psnr']:+.2f} / "
                f"{s['psnr_determined'] - ref['psnr_determined']:+.2f} dB"
            )
        lines.append(line)
    return "\n".join(lines)
