"""The demo's ``report.json``: the settings and, per run, the numbers the table prints."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from .config import DemoConfig
from .runs import ModeResult

__all__ = ["build_report", "loss_difference", "write_json"]


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
