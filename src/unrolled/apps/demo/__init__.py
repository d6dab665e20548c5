"""``unrolled demo``: the same unfolded network trained with full backprop through CG and with
the implicit backward (and with layer checkpointing too), side by side.

Each run starts from the same weights and sees the same batches and noise; the demo prints,
per run, the median time per training iteration, the training-step memory (peak allocated
over forward and backward, and bytes saved for backward) with its reduction against
``unroll``, the mean CG iterations forward and backward, how far the loss curve is from
``unroll``'s, and the PSNR on held-out images before and after training. It writes
``loss.png``, ``reconstructions.png`` and ``report.json`` to ``--out``.

``--physics`` picks the measurement: ``blur`` (the default), ``inpainting``,
``downsampling``, ``compressed_sensing``, ``singlecoil_mri`` or ``multicoil_mri``, the names
of ``unrolled train --operator`` except for single-coil MRI: ``mri`` keeps the meaning it
has always had in the demo, an alias of ``multicoil_mri``.

Programmatic use: ``run_demo(DemoConfig(...))`` returns the report as a dict.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from ...saving import describe, load_file, save
from ...weights import find_shipped
from .arguments import add_arguments, config_from_args
from .config import DemoConfig
from .experiment import (
    build_data,
    build_model,
    build_physics,
    has_closed_form_prox,
    initial_state,
    physics_spec,
)
from .figures import plot_figure, plot_loss_curves
from .report import build_report, write_json
from .runs import baseline_loss, demo_baselines, eval_batch, score_heldout, train_mode
from .tables import footnote, format_quality, format_table, header

__all__ = ["DemoConfig", "add_arguments", "config_from_args", "run", "run_demo"]


def run_demo(cfg: DemoConfig, *, echo=print) -> dict:
    """Run the demo; write its files to ``cfg.out``; return the report (a dict).

    ``echo``: where the progress lines and the table go (``print`` by default; a no-op
    callable silences them).
    """
    cfg = cfg.resolved()
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, echo)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: DemoConfig, echo) -> dict:
    start = time.perf_counter()
    out = Path(cfg.out)
    train_set, eval_set, data = build_data(cfg)
    physics = build_physics(cfg)
    echo(header(cfg, data))
    notes = []
    if has_closed_form_prox(cfg, physics):
        notes.append(
            f"the {cfg.physics} data step has a closed form (no CG): every backward mode "
            "differentiates the same formula, so the runs differ only where layers are "
            "checkpointed"
        )
        echo(f"note: {notes[-1]}")
    state = initial_state(cfg)
    eval_x, eval_y = eval_batch(cfg, eval_set, physics)
    echo("picking the classical baselines' weights on other photographs ...")
    baselines = demo_baselines(cfg, physics)

    results = []
    for mode in cfg.modes:
        echo(f"training {mode.name} from scratch: {mode.description} ...")
        result = train_mode(cfg, mode, state, train_set, eval_set, eval_y, baselines)
        echo(
            f"  done in {result.train_seconds:.1f} s, loss {result.losses[0]:.4g} -> "
            f"{result.losses[-1]:.4g}"
        )
        results.append(result)

    shipped = find_shipped(describe(build_model(cfg, cfg.modes[0])), physics_spec(cfg))
    finetuned = []
    skipped = _finetune_skipped(cfg, shipped)
    if skipped is not None:
        notes.append(f"no fine-tuning of shipped weights: {skipped}")
        echo(f"{notes[-1]}; saving the models trained from scratch")
    else:
        pretrained = load_file(shipped)
        tune_set, _, _ = build_data(
            cfg, crop=cfg.finetune_size, count=cfg.finetune_steps * cfg.batch_size
        )
        for mode in cfg.modes:
            echo(
                f"fine-tuning the shipped model's step sizes and denoiser levels with "
                f"{mode.name} ({cfg.finetune_steps} steps) ..."
            )
            finetuned.append(
                train_mode(
                    cfg,
                    mode,
                    pretrained.model.state_dict(),
                    tune_set,
                    eval_set,
                    eval_y,
                    baselines,
                    lr=cfg.finetune_lr,
                    measure=False,
                    # as the shipped model was trained: its denoiser is fixed, and training
                    # it further on these few photographs loses on others
                    scalars_only=True,
                )
            )
    saved_runs = finetuned or results
    out.mkdir(parents=True, exist_ok=True)
    origin = (
        {
            "start": "shipped weights",
            "file": shipped.name,
            "shipped_info": pretrained.info,
            "finetune_steps": cfg.finetune_steps,
            "finetune_size": cfg.finetune_size,
        }
        if finetuned
        else {"start": "random weights (seed)", "epochs": cfg.epochs, "finetune_skipped": skipped}
    )
    model_files = {}
    for r in saved_runs:
        info = {
            "command": "unrolled demo",
            "mode": r.mode.name,
            **origin,
            "data": data,
            "after": r.after,
            "seed": cfg.seed,
        }
        model_files[r.mode.name] = str(
            save(r.model, out / f"{r.mode.name}.pt", physics=physics_spec(cfg), info=info)
        )
    quality = score_heldout(saved_runs)
    files = {
        "loss_plot": str(
            plot_loss_curves(
                results,
                cfg.reference.name,
                out / "loss.png",
                baseline=baseline_loss(cfg, train_set, physics, baselines),
            )
        ),
        "reconstructions": str(
            plot_figure(eval_x, eval_y, physics, baselines, saved_runs, out / "reconstructions.png")
        ),
        "report": str(out / "report.json"),
        "models": model_files,
    }
    extra = {
        "files": files,
        "device": str(cfg.torch_device),
        "threads": torch.get_num_threads(),
        "torch_version": str(torch.__version__),
        "quality": quality,
        "saved_models": origin,
    }
    if notes:  # only where the run departs from the blur comparison
        extra["notes"] = notes
    report = build_report(
        cfg,
        results,
        data=data,
        seconds=time.perf_counter() - start,
        extra=extra,
        finetuned=finetuned,
    )
    write_json(report, out / "report.json")
    echo("")
    echo(format_table(report))
    echo("")
    echo(format_quality(report))
    echo("")
    echo(footnote(cfg))
    echo(
        f"wrote {files['loss_plot']}, {files['reconstructions']}, {files['report']}, "
        + ", ".join(model_files.values())
    )
    echo(f"total {report['total_seconds']:.1f} s")
    return report


def _finetune_skipped(cfg: DemoConfig, shipped) -> str | None:
    """Why the shipped weights are not fine-tuned (None where they are)."""
    if not cfg.pretrained:
        return "--from-scratch"
    if shipped is None:
        return f"the package ships no weights for this configuration ({cfg.physics})"
    return None


def run(args: argparse.Namespace) -> int:
    """Entry point of ``unrolled demo``: 0 on success, 2 on a bad setting."""
    # Bad settings (and missing data) are reported in one line; anything failing later is a
    # bug and keeps its traceback.
    try:
        cfg = config_from_args(args)
        resolved = cfg.resolved()
        build_data(resolved)
        build_physics(resolved)
    except (TypeError, ValueError, ImportError, OSError) as err:
        print(f"unrolled demo: error: {err}", file=sys.stderr)
        return 2
    run_demo(cfg)
    return 0
