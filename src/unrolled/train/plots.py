"""PNG figures: loss curves of several runs, and reconstructions next to their truth.

Figures are drawn on matplotlib's Agg canvas directly (no ``pyplot``, no display, and
the user's own matplotlib backend is left alone).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import Tensor

from .._validation import check_int
from .files import atomic_write_bytes
from .metrics import psnr

__all__ = ["plot_losses", "plot_reconstructions"]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    """Render to memory, then write atomically: a full disk leaves the old figure (or
    none) and a :class:`~unrolled.train.files.RunWriteError` naming the file."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic_write_bytes(buffer.getbuffer(), path, "figure")


def plot_losses(
    histories: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    log_scale: bool = True,
    title: str | None = None,
    xlabel: str = "training step",
    ylabel: str = "training loss (mean squared error)",
    reference: tuple[str, float] | None = None,
) -> Path:
    """Plot one loss curve per run on one figure and save it as PNG.

    Args:
        histories: ``{run name: losses per iteration}``.
        path: output file.
        log_scale: logarithmic y axis (falls back to linear when a finite value is <= 0).
        reference: ``(label, level)`` drawn as a dashed horizontal line, e.g. the loss of
            the best classical baseline on the same kind of images.

    Returns:
        ``path`` as a ``Path``.
    """
    if not isinstance(histories, Mapping) or not histories:
        raise ValueError("histories: expected a non-empty dict {name: list of losses}")
    fig = _figure(7, 4.5)
    ax = fig.subplots()
    positive = True
    for name, losses in histories.items():
        values = [float(v) for v in losses]
        finite = [v for v in values if math.isfinite(v)]
        positive = positive and all(v > 0 for v in finite)
        ax.plot(range(1, len(values) + 1), values, label=str(name), linewidth=1.2)
    if reference is not None:
        label, level = reference
        ax.axhline(float(level), color="grey", linestyle="--", linewidth=1, label=label)
        positive = positive and float(level) > 0
    if log_scale and positive:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def _display(t: Tensor) -> Tensor:
    """``(C, H, W)`` -> ``(H, W)`` or ``(H, W, 3)`` float for ``imshow``; complex by magnitude."""
    t = t.detach().cpu()
    t = t.abs() if t.is_complex() else t
    t = t.float()
    if t.ndim == 3 and t.shape[0] == 3:
        return t.permute(1, 2, 0)
    if t.ndim == 3:
        return t[0]
    return t


def plot_reconstructions(
    y: Tensor | None,
    x_hat: Tensor,
    x: Tensor,
    path: str | os.PathLike,
    *,
    n: int = 4,
    max_val: float = 1.0,
    baseline: tuple[str, Tensor] | None = None,
) -> Path:
    """A grid of ``n`` rows: measurement (at its own size, centred on the image's grid),
    a classical baseline, the estimate (each with its PSNR), truth.

    Args:
        y: measurements ``(B, C, h, w)``; may be smaller than ``x`` (valid padding) or
            ``None`` (column left out). Complex images are shown by magnitude.
        x_hat, x: estimates and truths ``(B, C, H, W)``; one channel is shown in grey,
            three as RGB, others by their first channel.
        n: rows, at most ``B``.
        max_val: the intensity shown white (and the PSNR peak).
        baseline: ``(label, estimates)`` of a classical reconstruction, shown beside the
            estimate.
    """
    check_int("n", n, minimum=1)
    for name, t in (("x_hat", x_hat), ("x", x)):
        if not isinstance(t, Tensor) or t.ndim != 4:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name}: expected a (B, C, H, W) tensor, got {got}")
    if x_hat.shape != x.shape:
        raise ValueError(
            f"x_hat: expected the shape of x {tuple(x.shape)}, got {tuple(x_hat.shape)}"
        )
    show_y = y is not None and isinstance(y, Tensor) and y.ndim == 4
    rows = min(n, x.shape[0])
    columns = [("measurement", y, None)] if show_y else []
    if baseline is not None:
        label, estimates = baseline
        columns.append((label, estimates, psnr(estimates[:rows], x[:rows], max_val=max_val)))
    columns.append(("trained network", x_hat, psnr(x_hat[:rows], x[:rows], max_val=max_val)))
    columns.append(("truth", x, None))
    height, width = x.shape[-2:]
    fig = _figure(2.6 * len(columns), 2.6 * rows)
    axes = fig.subplots(rows, len(columns), squeeze=False)
    for i in range(rows):
        for j, (name, batch, scores) in enumerate(columns):
            img = _display(batch[i])
            ax = axes[i][j]
            grey = img.ndim == 2
            h, w = img.shape[:2]
            # Drawn at its own pixel size on the image's grid: a valid measurement is
            # smaller than the image and sits in its middle.
            top, left = (height - h) / 2, (width - w) / 2
            ax.imshow(
                img.clamp(0, max_val).numpy() / (1 if grey else max_val),
                cmap="gray" if grey else None,
                vmin=0 if grey else None,
                vmax=max_val if grey else None,
                interpolation="nearest",
                extent=(left, left + w, top + h, top),
            )
            ax.set_xlim(0, width)
            ax.set_ylim(height, 0)
            label = f"{name} {h}x{w}" if scores is None else f"{name}\n{float(scores[i]):.2f} dB"
            ax.set_title(label, fontsize=9)
            ax.set_axis_off()
    fig.tight_layout()
    return _save(fig, path)
