"""Checks ``unrolled train`` makes before it starts: the run folder (a new run, or a
resume with a compatible configuration), the memory one step needs, a checkpoint to
resume from."""

from __future__ import annotations

from pathlib import Path

import torch

from ..train.checkpoint import LATEST, PREVIOUS, CheckpointError, numbered_checkpoints
from ..train.preflight import StepMemory, format_bytes, machine_memory
from .train_config import RESUME_MAY_CHANGE, ConfigError, default_config, load_config_file, merge

__all__ = ["check_memory", "check_resumable", "check_run_folder", "checkpoint_bytes"]


def check_run_folder(config: dict, resume: bool) -> None:
    """Refuse to start over an existing run, or to resume one with a different config."""
    out = Path(config["out"])
    saved = out / "config.toml"
    has_run = (out / "latest.pt").exists() or (out / "previous.pt").exists()
    if not resume:
        if has_run:
            raise ConfigError(
                f"out: {out} already holds a run (latest.pt); continue it with --resume or "
                "choose another --out"
            )
        return
    if not saved.is_file():
        return
    old = default_config()
    merge(old, load_config_file(saved), where=f"config file {saved}")
    changed = [
        f"{section}.{k}" if section else k
        for section, k, a, b in _diff(old, config)
        if (f"{section}.{k}" if section else k) not in RESUME_MAY_CHANGE
    ]
    if changed:
        raise ConfigError(
            f"--resume: the run in {out} was made with a different configuration "
            f"({', '.join(changed)} differ from {saved}); resuming would not continue that run"
        )


def _diff(a: dict, b: dict):
    for name, value in a.items():
        if isinstance(value, dict):
            for k, v in value.items():
                if b[name][k] != v:
                    yield name, k, v, b[name][k]
        elif b[name] != value:
            yield "", name, value, b[name]


def _step_memory(config: dict) -> StepMemory:
    """What one training step of ``config`` holds at least (see :mod:`.preflight`)."""
    m, d = config["model"], config["data"]
    c, f = d["channels"], m["features"]
    if m["denoiser"] == "dncnn":
        maps = m["depth"] - 1
        weights = 9 * (c * f + (m["depth"] - 2) * f * f + f * c)
    else:  # UNet: two full-resolution convolutions at least, wider ones below
        maps = 2
        weights = sum(2 * 9 * (f * 2**level) ** 2 for level in range(m["levels"]))
    copies = 1 if m["share_denoiser"] else m["layers"]
    return StepMemory(
        batch=config["train"]["batch_size"],
        channels=c,
        height=d["size"],
        width=d["size"],
        layers=m["layers"],
        feature_maps=maps,
        features=f,
        dtype_bytes=8 if config["train"]["dtype"] == "float64" else 4,
        parameters=weights * copies + 4 * m["layers"],
        checkpoint_layers=m["checkpoint_layers"],
    )


def _sensing_matrix_bytes(config: dict) -> int:
    """The dense matrix of compressed sensing, ``round(ratio n) x n`` for ``n = C H W``
    (0 for the other operators, whose operators are small next to a step)."""
    if config["physics"]["operator"] != "compressed_sensing":
        return 0
    d = config["data"]
    n = d["channels"] * d["size"] ** 2
    itemsize = 8 if config["train"]["dtype"] == "float64" else 4
    return max(1, round(config["physics"]["ratio"] * n)) * n * itemsize


def check_memory(config: dict) -> None:
    """Refuse, before anything is allocated, a run whose steps cannot fit in memory."""
    device = config["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    have = machine_memory(device)
    if have is None:
        return
    step = _step_memory(config)
    # Processes on one CPU share its memory; on GPUs each has its own device.
    copies = config["nproc"] if torch.device(device).type == "cpu" else 1
    matrix = _sensing_matrix_bytes(config)
    if matrix * copies > have:
        d, p = config["data"], config["physics"]
        raise ConfigError(
            f"data.size={d['size']}, data.channels={d['channels']}, physics.ratio={p['ratio']}: "
            f"the compressed-sensing matrix needs {format_bytes(matrix * copies)}, more than "
            f"the {format_bytes(have)} of memory on {device}; lower one of them"
        )
    need = step.total * copies
    if need > have:
        d, m, t = config["data"], config["model"], config["train"]
        raise ConfigError(
            f"data.size={d['size']}, train.batch_size={t['batch_size']}, "
            f"model.layers={m['layers']}, model.features={m['features']}: one training step "
            f"needs at least {format_bytes(need)} ({step.describe()}), more than the "
            f"{format_bytes(have)} of memory on {device}; lower one of them (or set "
            "model.checkpoint_layers = true)"
        )


def checkpoint_bytes(trainer) -> int:
    """About what one checkpoint of ``trainer`` takes: its weights and Adam's two moments."""
    weights = sum(t.numel() * t.element_size() for t in trainer.module.state_dict().values())
    return 3 * weights + (1 << 16)  # plus the history, the RNG state, the zip's frame


def check_resumable(config: dict) -> None:
    """Fail early (before starting processes) when --resume has nothing usable."""
    out = Path(config["out"])
    names = [LATEST, PREVIOUS]
    if not any((out / n).exists() for n in names) and not numbered_checkpoints(out):
        raise CheckpointError(f"--resume: no checkpoint in {out} (no {LATEST} nor older ones)")
