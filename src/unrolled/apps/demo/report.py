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

from ...evaluation import psnr
from .config import DemoConfig
from .runs import ModeResult

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


def _run_entry(r: ModeResult, ref: ModeResult | None) -> dict:
    entry = {
        "backward": r.mode.backward,
        "checkpoint_layers": r.mode.checkpoint_layers,
        "description": r.mode.description,
        "time_per_iter_s": r.time_per_iter,
        "times_s": r.times,
        "train_seconds": r.train_seconds,
        "cg": {"forward": r.cg_forward, "backward": r.cg_backward, "unconverged": r.cg_unconverged},
        "loss": r.losses,
        "scores": {"before": r.before, "after": r.after},
        "learned": {"stepsize": r.stepsize, "sigma": r.sigma},
    }
    if ref is not None:
        entry["loss_diff_vs_reference"] = loss_difference(r.losses, ref.losses)
    if r.memory is not None and ref is not None and ref.memory is not None:
        memory = dict(r.memory)
        memory["peak_reduction"] = _ratio(ref.memory["peak_bytes"], r.memory["peak_bytes"])
        memory["saved_reduction"] = _ratio(ref.memory["saved_bytes"], r.memory["saved_bytes"])
        if r.rss is not None and ref.rss is not None:
            memory["rss_reduction"] = _ratio(
                ref.rss["peak_above_baseline_bytes"], r.rss["peak_above_baseline_bytes"]
            )
        entry["memory"] = memory
        entry["rss"] = r.rss
    return entry


def build_report(
    cfg: DemoConfig,
    results: list[ModeResult],
    *,
    data: str,
    seconds: float,
    extra: dict,
    finetuned: Sequence[ModeResult] = (),
) -> dict:
    """The JSON report: settings; per mode trained from scratch the timing, memory (with
    the reduction factor against the reference run), CG iterations, loss curve and its
    difference to the reference, held-out scores before and after, learned scalars; the
    same (without memory) for the runs fine-tuned from shipped weights."""
    ref = next(r for r in results if r.mode == cfg.reference)
    ref_tuned = next((r for r in finetuned if r.mode == cfg.reference), None)
    initial = results[0]
    return {
        "command": "unrolled demo",
        "config": cfg.to_dict(),
        "data": data,
        "reference": cfg.reference.name,
        "initial_scalars": {"stepsize": cfg.stepsize, "sigma": cfg.sigma},
        "modes": {r.mode.name: _run_entry(r, ref) for r in results},
        "finetuned": {r.mode.name: _run_entry(r, ref_tuned) for r in finetuned},
        "scores_at_random_weights": initial.before,
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
            "held-out PSNR full / determined, SSIM",
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
                _scores(m["scores"]["after"]),
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


def _scores(s: dict) -> str:
    return f"{s['psnr']:.2f} / {s['psnr_determined']:.2f} dB, {s['ssim']:.3f}"


def format_quality(report: dict) -> str:
    """The held-out comparison: each classical baseline and each saved model, with the
    gain of the models over the best baseline."""
    q = report["quality"]
    saved = report["saved_models"]
    origin = (
        f"shipped weights ({saved['file']}) fine-tuned {saved['finetune_steps']} steps"
        if saved["start"] == "shipped weights"
        else f"trained from random weights, {saved['epochs']} epochs"
    )
    cfg = report["config"]
    rows = [("method", "PSNR full", "PSNR determined", "SSIM", "vs best baseline")]
    best = q["baselines"][q["best_baseline"]]
    for label, s in q["baselines"].items():
        rows.append(
            (
                label,
                f"{s['psnr']:.2f} dB",
                f"{s['psnr_determined']:.2f} dB",
                f"{s['ssim']:.3f}",
                "(best)" if label == q["best_baseline"] else "",
            )
        )
    for name, s in q["models"].items():
        gain = (
            f"{s['psnr'] - best['psnr']:+.2f} / "
            f"{s['psnr_determined'] - best['psnr_determined']:+.2f} dB"
        )
        rows.append(
            (
                f"{name}.pt",
                f"{s['psnr']:.2f} dB",
                f"{s['psnr_determined']:.2f} dB",
                f"{s['ssim']:.3f}",
                gain,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        f"held-out reconstructions: {cfg['num_eval']} crops of {cfg['eval_size']}x"
        f"{cfg['eval_size']} of photographs never trained on; the baselines' weights "
        f"picked on {cfg['eval_size']}x{cfg['eval_size']} crops of the training "
        f"photographs; saved models: {origin}",
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(2, "  ".join("-" * w for w in widths))
    runs = report["finetuned"] or report["modes"]
    first = next(iter(runs.values()))["learned"]
    lines.append(
        "learned per layer: stepsize "
        + " ".join(f"{v:.3g}" for v in first["stepsize"])
        + "; sigma "
        + " ".join(f"{v:.3g}" for v in first["sigma"])
        + f" (start: {_start_scalars(report)})"
    )
    return "\n".join(lines)


def _start_scalars(report: dict) -> str:
    saved = report["saved_models"]
    if saved["start"] == "shipped weights":
        learned = saved.get("shipped_info", {}).get("learned", {})
        if learned:
            return (
                "shipped stepsize "
                + " ".join(f"{v:.3g}" for v in learned["stepsize"])
                + ", sigma "
                + " ".join(f"{v:.3g}" for v in learned["sigma"])
            )
        return "shipped values"
    init = report["initial_scalars"]
    return f"stepsize {init['stepsize']:g}, sigma {init['sigma']:g} in every layer"


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
    zero-filled ``A^H y``), the best classical baseline, the trained network (one column per
    backward mode only where the modes differ visibly), the truth; each estimate titled with
    its PSNR. Complex images are shown by magnitude."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with torch.no_grad():
        scored = [(b, b(physics, y)) for b in baselines]
    best, best_estimate = max(scored, key=lambda p: float(psnr(p[1], x).mean()))
    digits = agreement_digits([r.estimates for r in runs]) if len(runs) > 1 else math.inf
    # Modes that agree to 3 digits or more look identical: one column stands for them all.
    shown_runs = runs if digits < 3 else runs[:1]
    measured = y if not y.is_complex() else physics.A_adjoint(y)
    columns = [
        (
            f"measurement {tuple(y.shape[-2:])}" if not y.is_complex() else "A^H y (zero-filled)",
            measured,
            None,
        )
    ]
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
