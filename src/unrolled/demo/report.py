"""The demo's outputs: the printed table, ``report.json``, ``loss.png`` and
``reconstructions.png``."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..train import psnr
from .config import DemoConfig
from .experiment import ModeResult

__all__ = ["build_report", "format_bytes", "format_table", "plot_figure", "write_json"]


def format_bytes(n: float | None) -> str:
    """``51234567`` -> ``"51.2 MB"`` (decimal units, as ``du --si``)."""
    if n is None or not math.isfinite(n):
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def _ratio(reference: float, value: float) -> float | None:
    return reference / value if value > 0 else None


def loss_difference(losses: Sequence[float], reference: Sequence[float]) -> dict:
    """How far one run's loss curve is from the reference run's, step by step."""
    pairs = list(zip(losses, reference, strict=True))
    if not pairs:
        return {"mean_abs": 0.0, "max_abs": 0.0, "mean_rel": 0.0}
    diffs = [abs(a - b) for a, b in pairs]
    rel = [abs(a - b) / abs(b) for a, b in pairs if b != 0]
    return {
        "mean_abs": sum(diffs) / len(diffs),
        "max_abs": max(diffs),
        "mean_rel": sum(rel) / len(rel) if rel else 0.0,
    }


def build_report(
    cfg: DemoConfig, results: list[ModeResult], *, data: str, seconds: float, extra: dict
) -> dict:
    """The JSON report: settings, and per mode the timing, memory (with the reduction factor
    against the reference run), CG iterations, loss curve and its difference to the
    reference, PSNR before and after training and the learned scalars."""
    ref = next(r for r in results if r.mode == cfg.reference)
    modes = {}
    for r in results:
        memory = dict(r.memory)
        memory["peak_reduction"] = _ratio(ref.memory["peak_bytes"], r.memory["peak_bytes"])
        memory["saved_reduction"] = _ratio(ref.memory["saved_bytes"], r.memory["saved_bytes"])
        if r.rss is not None and ref.rss is not None:
            memory["rss_reduction"] = _ratio(
                ref.rss["peak_above_baseline_bytes"], r.rss["peak_above_baseline_bytes"]
            )
        modes[r.mode.name] = {
            "backward": r.mode.backward,
            "checkpoint_layers": r.mode.checkpoint_layers,
            "description": r.mode.description,
            "time_per_iter_s": r.time_per_iter,
            "times_s": r.times,
            "train_seconds": r.train_seconds,
            "memory": memory,
            "rss": r.rss,
            "cg": {
                "forward": r.cg_forward,
                "backward": r.cg_backward,
                "unconverged": r.cg_unconverged,
            },
            "loss": r.losses,
            "loss_diff_vs_reference": loss_difference(r.losses, ref.losses),
            "psnr": {
                "before": r.psnr_before,
                "after": r.psnr_after,
                "adjoint": r.psnr_adjoint,
            },
            "learned": {"stepsize": r.stepsize, "sigma": r.sigma},
        }
    return {
        "command": "unrolled demo",
        "config": cfg.to_dict(),
        "data": data,
        "reference": cfg.reference.name,
        "modes": modes,
        "total_seconds": seconds,
        **extra,
    }


def format_table(report: dict) -> str:
    """The human-readable summary printed at the end of the run."""
    ref = report["reference"]
    modes = report["modes"]
    rows = [
        (
            "mode",
            "time/it",
            "peak mem",
            "reduction",
            "saved bwd",
            "reduction",
            "CG fwd",
            "CG bwd",
            f"|dloss| vs {ref}",
            "PSNR before -> after",
        )
    ]
    rss_rows = any(m.get("rss") for m in modes.values())
    for name, m in modes.items():
        mem = m["memory"]
        diff = m["loss_diff_vs_reference"]
        rows.append(
            (
                name,
                f"{m['time_per_iter_s']:.3f} s",
                format_bytes(mem["peak_bytes"]),
                _factor(mem["peak_reduction"]),
                format_bytes(mem["saved_bytes"]),
                _factor(mem["saved_reduction"]),
                f"{m['cg']['forward']:.1f}",
                f"{m['cg']['backward']:.1f}" if m["cg"]["backward"] else "-",
                "(reference)" if name == ref else _diff(diff),
                f"{m['psnr']['before']:.2f} -> {m['psnr']['after']:.2f} dB",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if rss_rows:
        lines.append("")
        lines.append("peak RSS of a separate process (above its baseline), cross-check:")
        for name, m in modes.items():
            rss = m.get("rss")
            if rss:
                lines.append(
                    f"  {name:<16} {format_bytes(rss['peak_above_baseline_bytes']):>10}  "
                    f"{_factor(m['memory'].get('rss_reduction'))}  ({rss['steps']} steps)"
                )
    return "\n".join(lines)


def _diff(diff: dict) -> str:
    return f"{diff['mean_abs']:.1e} ({diff['mean_rel']:.0e})"


def _factor(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def write_json(report: dict, path: str | os.PathLike) -> Path:
    """Write ``report`` as indented JSON (non-finite numbers as ``null``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_finite(report), indent=2) + "\n")
    tmp.replace(path)
    return path


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def plot_loss_curves(results: list[ModeResult], reference: str, path: str | os.PathLike) -> Path:
    """Left: every run's training loss on one log-scale plot (the curves lie on top of each
    other when the gradients agree). Right: each run's relative distance to the reference
    run's loss, per step, on a log scale, so the size of the difference can be read."""
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
    if all(v > 0 for r in results for v in r.losses):
        left.set_yscale("log")
    left.set_title("training loss (same weights, data and noise)")
    right.set_yscale("log")
    right.set_title(f"|loss - loss[{reference}]| / loss[{reference}]")
    for ax in (left, right):
        ax.set_xlabel("training iteration")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
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


def plot_figure(
    x: Tensor,
    shown: Tensor,
    shown_label: str,
    results: list[ModeResult],
    path: str | os.PathLike,
) -> Path:
    """Rows: held-out images. Columns: ``shown`` (the measurement or ``A^H y``), the estimate
    of every run (with its PSNR), the truth. Complex images are shown by magnitude."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = [(shown_label, shown, None)]
    for r in results:
        columns.append((r.mode.name, r.estimates, psnr(r.estimates, x)))
    columns.append(("truth", x, None))
    rows = x.shape[0]
    fig = Figure(figsize=(2.2 * len(columns), 2.3 * rows), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, len(columns), squeeze=False)
    for i in range(rows):
        for j, (label, batch, scores) in enumerate(columns):
            img, cmap = _image(batch[i])
            ax = axes[i][j]
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            title = label if scores is None else f"{label}\n{float(scores[i]):.2f} dB"
            ax.set_title(title, fontsize=8)
            ax.set_axis_off()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def header(cfg: DemoConfig, data: str) -> str:
    """What the run is, in a few lines (printed before training)."""
    if cfg.physics == "blur":
        physics = f"Gaussian blur sigma {cfg.blur_sigma} (valid padding), noise sigma {cfg.noise}"
    else:
        physics = (
            f"multi-coil MRI, {cfg.coils} coils, {cfg.acceleration}x Cartesian undersampling, "
            f"noise sigma {cfg.noise}"
        )
    device = cfg.torch_device
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    return "\n".join(
        [
            f"unrolled demo: unfolded HQS, {cfg.layers} layers, shared DnCNN depth {cfg.depth} "
            f"x {cfg.features} features, trainable stepsize and sigma (init {cfg.stepsize}, "
            f"{cfg.sigma})",
            f"  physics: {physics}; CG(max_iter={cfg.max_iter}, tol={cfg.tol:g})",
            f"  data: {data}; {cfg.img_size}x{cfg.img_size}, batch {cfg.batch_size}, "
            f"{cfg.epochs} epochs, Adam lr {cfg.lr:g}, seed {cfg.seed}",
            f"  device: {device}{threads}; runs: " + ", ".join(m.name for m in cfg.modes),
        ]
    )
