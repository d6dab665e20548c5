"""The demo's figures: ``loss.png`` (the training loss of each run) and
``reconstructions.png`` (held-out images, the best baseline and the trained network)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ...evaluation import psnr
from .runs import ModeResult

__all__ = ["agreement_digits", "plot_figure", "plot_loss_curves"]


def plot_loss_curves(
    results: list[ModeResult],
    reference: str,
    path: str | os.PathLike,
    *,
    baseline: tuple[str, float] | None = None,
) -> Path:
    """Left: every run's training loss (mean squared error per pixel) on one log-scale plot
    (the curves lie on top of each other when the gradients agree), with the best classical
    baseline's loss on the same kind of images as a dashed line. Right: each run's relative
    distance to the reference run's loss, per step, on a log scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    styles = ["-", "--", ":", "-."]
    ref = next(r for r in results if r.mode.name == reference)
    for i, r in enumerate(results):
        steps = range(1, len(r.losses) + 1)
        left.plot(steps, r.losses, styles[i % 4], label=r.mode.name, linewidth=1.4)
        if r is ref:
            continue
        rel = [abs(a - b) / abs(b) if b else 0.0 for a, b in zip(r.losses, ref.losses, strict=True)]
        # Exact agreement (the first step always) has no place on a log axis: drawn at 1e-12.
        right.plot(steps, [max(v, 1e-12) for v in rel], styles[i % 4], label=r.mode.name)
    if baseline is not None:
        label, level = baseline
        left.axhline(
            level, color="grey", linestyle="--", linewidth=1, label=f"best baseline: {label}"
        )
    if all(v > 0 for r in results for v in r.losses):
        left.set_yscale("log")
    left.set_title("training loss from scratch (same weights, data and noise)")
    left.set_ylabel("mean squared error per pixel")
    right.set_yscale("log")
    right.set_title(f"relative difference to {reference}'s loss")
    right.set_ylabel(f"|loss - loss[{reference}]| / loss[{reference}]")
    for ax in (left, right):
        ax.set_xlabel("training step")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _image(t: Tensor):
    t = t.detach().cpu()
    t = t.abs() if t.is_complex() else t
    t = t.float().clamp(0, 1)
    if t.shape[0] == 3:
        return t.permute(1, 2, 0).numpy(), None
    return t[0].numpy(), "gray"


def agreement_digits(estimates: Sequence[Tensor]) -> float:
    """How many significant digits the estimates share: ``-log10`` of the largest
    difference to the first, relative to its largest magnitude (inf when identical)."""
    first = estimates[0].abs().max().clamp_min(1e-30)
    worst = max(float((e - estimates[0]).abs().max() / first) for e in estimates[1:])
    return math.inf if worst == 0 else -math.log10(worst)


def plot_figure(
    x: Tensor,
    y: Tensor,
    physics,
    baselines: Sequence,
    runs: list[ModeResult],
    path: str | os.PathLike,
) -> Path:
    """Rows: held-out images. Columns: the measurement at its true size (for MRI, the
    zero-filled ``A^H y``; for compressed sensing, ``A^T y``), the best classical baseline,
    the trained network (one column per backward mode only where the modes differ visibly),
    the truth; each estimate titled with its PSNR. Complex images are shown by magnitude."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with torch.no_grad():
        scored = [(b, b(physics, y)) for b in baselines]
    best, best_estimate = max(scored, key=lambda p: float(psnr(p[1], x).mean()))
    digits = agreement_digits([r.estimates for r in runs]) if len(runs) > 1 else math.inf
    # Modes that agree to 3 digits or more look identical: one column stands for them all.
    shown_runs = runs if digits < 3 else runs[:1]
    if y.is_complex():
        measurement = ("A^H y (zero-filled)", physics.A_adjoint(y))
    elif y.ndim != x.ndim:  # not an image (compressed sensing): shown through the adjoint
        measurement = ("A^T y", physics.A_adjoint(y))
    else:
        measurement = (f"measurement {tuple(y.shape[-2:])}", y)
    columns = [(*measurement, None)]
    columns.append((best.label, best_estimate, psnr(best_estimate, x)))
    for r in shown_runs:
        name = r.mode.name if len(shown_runs) > 1 else "trained network"
        columns.append((name, r.estimates, psnr(r.estimates, x)))
    columns.append((f"truth {tuple(x.shape[-2:])}", x, None))
    rows = x.shape[0]
    fig = Figure(figsize=(2.4 * len(columns), 2.5 * rows + 0.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, len(columns), squeeze=False)
    h, w = x.shape[-2:]
    for i in range(rows):
        for j, (label, batch, scores) in enumerate(columns):
            img, cmap = _image(batch[i])
            ax = axes[i][j]
            # Every image drawn at its own pixel size on the truth's grid: a valid
            # measurement is smaller than the image and sits in its middle.
            ih, iw = img.shape[:2]
            top, left = (h - ih) / 2, (w - iw) / 2
            ax.imshow(
                img,
                cmap=cmap,
                vmin=0,
                vmax=1,
                interpolation="nearest",
                extent=(left, left + iw, top + ih, top),
            )
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
            title = label if scores is None else f"{label}\n{float(scores[i]):.2f} dB"
            ax.set_title(title, fontsize=8)
            ax.set_axis_off()
    if len(runs) > 1 and len(shown_runs) == 1:
        agree = "all digits" if math.isinf(digits) else f"{digits:.0f} digits"
        fig.suptitle(
            f"trained network: {', '.join(r.mode.name for r in runs)} agree to {agree}",
            fontsize=9,
        )
        fig.tight_layout(rect=(0, 0, 1, 0.97))
    else:
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
