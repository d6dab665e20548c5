"""The model files ``unrolled train`` writes (``best.pt``, ``last.pt``), readable by
:func:`unrolled.load`, and the summary line of an evaluation."""

from __future__ import annotations

from pathlib import Path

from ..saving import save
from .train_setup import physics_spec

__all__ = ["BEST_MODEL", "LAST_MODEL", "KeepBest", "eval_summary", "save_model"]

#: the model files ``unrolled train`` writes (``unrolled.load`` reads them)
BEST_MODEL = "best.pt"
LAST_MODEL = "last.pt"


def eval_summary(record: dict) -> str:
    """One evaluation record as two lines: the model and the best classical baseline."""
    line = (
        f"held-out: trained model PSNR {record['psnr']:.2f} dB (determined region "
        f"{record['psnr_determined']:.2f} dB), SSIM {record['ssim']:.3f}"
    )
    if "baseline" in record:
        line += (
            f"\n          best baseline {record['baseline']}: "
            f"PSNR {record['psnr_baseline']:.2f} dB "
            f"(determined region {record['psnr_determined_baseline']:.2f} dB), SSIM "
            f"{record['ssim_baseline']:.3f}; model - baseline "
            f"{record['psnr'] - record['psnr_baseline']:+.2f} / "
            f"{record['psnr_determined'] - record['psnr_determined_baseline']:+.2f} dB"
        )
    return line


def save_model(trainer, config: dict, path: Path, record: dict | None = None) -> None:
    module = trainer.module
    info = {
        "command": "unrolled train",
        "step": trainer.step,
        "epoch": trainer.epoch,
        "seed": config["seed"],
        "data": dict(config["data"]),
    }
    if record is not None:
        info["eval"] = {k: v for k, v in record.items() if isinstance(v, (int, float, str))}
    info["learned"] = {
        "stepsize": module.stepsize.detach().cpu().tolist(),
        "sigma": module.sigma.detach().cpu().tolist(),
    }
    save(module, path, physics=physics_spec(config), info=info)


class KeepBest:
    """After each evaluation, write the model as ``best.pt`` when its PSNR is the best yet."""

    def __init__(self, config: dict, path: Path):
        self.config = config
        self.path = path

    def __call__(self, trainer, record: dict) -> None:
        if not trainer.is_main:
            return
        earlier = [r["psnr"] for r in trainer.history["eval"] if r is not record]
        if not earlier or record["psnr"] > max(earlier) or not self.path.exists():
            save_model(trainer, self.config, self.path, record)
