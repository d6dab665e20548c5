"""The demo's printed text: the header before training, the table of the runs and the
held-out comparison after it."""

from __future__ import annotations

import math

import torch

from .config import DemoConfig
from .experiment import initial_estimate_of

__all__ = ["footnote", "format_bytes", "format_quality", "format_table", "header"]


def format_bytes(n: float | None) -> str:
    """``51234567`` -> ``"51.2 MB"`` (decimal units, as ``du --si``)."""
    if n is None or not math.isfinite(n):
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


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
        f"shipped weights ({saved['file']}), step sizes and denoiser levels fine-tuned "
        f"{saved['finetune_steps']} steps"
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


def header(cfg: DemoConfig, data: str) -> str:
    """What the run is, in a few lines (printed before training)."""
    physics = f"{_measurement(cfg)}, noise sigma {cfg.noise}"
    device = cfg.torch_device
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    return "\n".join(
        [
            f"unrolled demo: unfolded HQS, {cfg.layers} layers, shared DnCNN depth {cfg.depth} "
            f"x {cfg.features} features, trainable stepsize and sigma (init {cfg.stepsize}, "
            f"{cfg.sigma}), started from {_start(cfg)}{_ensemble(cfg)}",
            f"  physics: {physics}; CG(max_iter={cfg.max_iter}, tol={cfg.tol:g})",
            f"  data: {data}; {cfg.img_size}x{cfg.img_size}, batch {cfg.batch_size}, "
            f"{cfg.epochs} epochs, Adam lr {cfg.lr:g}, seed {cfg.seed}",
            f"  device: {device}{threads}; runs: " + ", ".join(m.name for m in cfg.modes),
        ]
    )


def _start(cfg: DemoConfig) -> str:
    """The model's initial estimate in words."""
    init, weight = initial_estimate_of(cfg)
    if init == "smooth":
        return f"smooth least squares (weight {weight:g})"
    return "A^T y / A^T 1" if cfg.physics in ("blur", "downsampling", "inpainting") else "A^H y"


def _ensemble(cfg: DemoConfig) -> str:
    """How evaluation averages the denoiser, in words (nothing without an ensemble)."""
    turns = {"rotations": "4 quarter turns", "dihedral": "4 quarter turns and their mirrors"}
    if cfg.ensemble == "none":
        return ""
    return f"; evaluated with each denoiser call averaged over {turns[cfg.ensemble]}"


def _measurement(cfg: DemoConfig) -> str:
    """The measurement of ``cfg.physics`` in words (without its noise)."""
    mri = f"{cfg.acceleration}x Cartesian undersampling"
    return {
        "blur": f"Gaussian blur sigma {cfg.blur_sigma} (valid padding)",
        "inpainting": f"inpainting, a random mask keeping {cfg.keep:g} of the pixels",
        "downsampling": f"{cfg.factor}x downsampling (Gaussian anti-aliasing, valid padding)",
        "compressed_sensing": f"compressed sensing, {cfg.ratio:g} Gaussian measurements per pixel",
        "singlecoil_mri": f"single-coil MRI, {mri}",
        "multicoil_mri": f"multi-coil MRI, {cfg.coils} coils, {mri}",
    }[cfg.physics]


#: what "PSNR determined" covers, per measurement (see unrolled.evaluation.determined_region)
_DETERMINED = {
    "blur": "over the pixels whose whole blur footprint lies inside the image",
    "downsampling": "over the pixels whose whole anti-aliasing footprint lies inside the image",
    "inpainting": "over the observed pixels",
}


def footnote(cfg: DemoConfig) -> str:
    """The legend printed under the tables."""
    determined = _DETERMINED.get(cfg.physics, "over the whole image (no region singled out)")
    return (
        "time/it: median training step (warm-up step excluded); peak mem: every allocation "
        "over one step's forward+backward; saved bwd: bytes held for backward (what layer "
        "checkpointing recomputes is not in it); reduction: reference / this; |dloss|: mean "
        f"absolute (relative) difference of the loss per step; PSNR determined: {determined}."
    )
