"""``unrolled demo``: the same unfolded network trained with full backprop through CG and with
the implicit backward (and with layer checkpointing too), side by side.

Each run starts from the same weights and sees the same batches and noise; the demo prints,
per run, the median time per training iteration, the training-step memory (peak allocated
over forward and backward, and bytes saved for backward) with its reduction against
``unroll``, the mean CG iterations forward and backward, how far the loss curve is from
``unroll``'s, and the PSNR on held-out images before and after training. It writes
``loss.png``, ``reconstructions.png`` and ``report.json`` to ``--out``.

Programmatic use: ``run_demo(DemoConfig(...))`` returns the report as a dict.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .config import DEFAULT_EPOCHS, DEFAULT_MODES, DemoConfig, parse_data, parse_modes
from .experiment import build_data, build_physics, eval_batch, initial_state, train_mode
from .report import (
    build_report,
    format_table,
    header,
    plot_figure,
    plot_loss_curves,
    write_json,
)

__all__ = ["DemoConfig", "add_arguments", "config_from_args", "run", "run_demo"]


def _argtype(parse, what: str):
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = what
    return convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's flags (sizes left unset take the device's defaults)."""
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    d = DemoConfig()
    g = parser.add_argument_group("problem")
    g.add_argument("--physics", choices=("blur", "mri"), default=d.physics)
    g.add_argument(
        "--data",
        type=_argtype(parse_data, "data"),
        default="auto",
        help="samples | deadleaves | bsds | folder:PATH | auto (samples if scikit-image "
        "is installed, else deadleaves)",
    )
    g.add_argument("--img-size", type=int, help="crop size (default: 32 on CPU, 64 on CUDA)")
    g.add_argument("--num-images", type=int, help="training images (64 CPU, 480 CUDA)")
    g.add_argument("--num-eval", type=int, help="held-out images (16 CPU, 64 CUDA)")
    g.add_argument("--blur-sigma", type=float, default=d.blur_sigma)
    g.add_argument("--noise", type=float, default=d.noise, help="measurement noise std")
    g.add_argument("--acceleration", type=int, default=d.acceleration, help="MRI only")
    g.add_argument("--coils", type=int, default=d.coils, help="MRI only")
    g = parser.add_argument_group("model and solver")
    g.add_argument("--layers", type=int, default=d.layers)
    g.add_argument("--depth", type=int, default=d.depth, help="DnCNN convolutions")
    g.add_argument("--features", type=int, default=d.features, help="DnCNN channels")
    g.add_argument("--stepsize", type=float, default=d.stepsize, help="initial HQS step")
    g.add_argument("--sigma", type=float, default=d.sigma, help="initial denoiser level")
    g.add_argument("--max-iter", type=int, default=d.max_iter, help="CG iterations at most")
    g.add_argument("--tol", type=float, default=d.tol, help="CG relative tolerance")
    g.add_argument(
        "--modes",
        type=_argtype(parse_modes, "modes"),
        default=",".join(DEFAULT_MODES),
        help="comma-separated runs: unroll, implicit, checkpoint, each optionally +ckpt "
        "(layer checkpointing)",
    )
    g = parser.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    g.add_argument("--batch-size", type=int, help="batch size (8 CPU, 32 CUDA)")
    g.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1, ...")
    g.add_argument("--threads", type=int, help="intra-op CPU threads (default: 1 on CPU)")
    g = parser.add_argument_group("output")
    g.add_argument("--out", default=d.out, help="folder for loss.png, report.json, ...")
    g.add_argument(
        "--rss",
        action="store_true",
        help="cross-check memory: peak RSS of a separate process per mode running "
        "--rss-steps training steps",
    )
    g.add_argument("--rss-steps", type=int, default=d.rss_steps)
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    modes = args.modes if isinstance(args.modes, tuple) else parse_modes(args.modes)
    return DemoConfig(
        physics=args.physics,
        device=args.device,
        img_size=args.img_size,
        num_images=args.num_images,
        num_eval=args.num_eval,
        batch_size=args.batch_size,
        epochs=args.epochs,
        max_iter=args.max_iter,
        tol=args.tol,
        data=args.data,
        out=args.out,
        seed=args.seed,
        layers=args.layers,
        depth=args.depth,
        features=args.features,
        modes=modes,
        lr=args.lr,
        stepsize=args.stepsize,
        sigma=args.sigma,
        blur_sigma=args.blur_sigma,
        noise=args.noise,
        acceleration=args.acceleration,
        coils=args.coils,
        rss=args.rss,
        rss_steps=args.rss_steps,
        threads=args.threads,
        progress=not args.no_progress,
    )


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
    build_physics(cfg)  # fail early on an impossible geometry
    echo(header(cfg, data))
    state = initial_state(cfg)
    eval_x, eval_y = eval_batch(cfg, eval_set, build_physics(cfg))
    results = []
    for mode in cfg.modes:
        echo(f"training {mode.name}: {mode.description} ...")
        result = train_mode(cfg, mode, state, train_set, eval_set, eval_x, eval_y)
        echo(
            f"  done in {result.train_seconds:.1f} s, loss {result.losses[0]:.4g} -> "
            f"{result.losses[-1]:.4g}"
        )
        results.append(result)

    out.mkdir(parents=True, exist_ok=True)
    files = {
        "loss_plot": str(plot_loss_curves(results, cfg.reference.name, out / "loss.png")),
        "reconstructions": str(
            plot_figure(
                eval_x,
                eval_y if cfg.physics == "blur" else build_physics(cfg).A_adjoint(eval_y),
                "measurement" if cfg.physics == "blur" else "A^H y",
                results,
                out / "reconstructions.png",
            )
        ),
        "report": str(out / "report.json"),
    }
    extra = {
        "files": files,
        "device": str(cfg.torch_device),
        "threads": torch.get_num_threads(),
        "torch_version": str(torch.__version__),
    }
    report = build_report(cfg, results, data=data, seconds=time.perf_counter() - start, extra=extra)
    write_json(report, out / "report.json")
    echo("")
    echo(format_table(report))
    echo("")
    echo(
        "time/it: median training step (warm-up step excluded); peak mem: every allocation "
        "over one step's forward+backward; saved bwd: bytes held for backward (what layer "
        "checkpointing recomputes is not in it); reduction: reference / this; |dloss|: mean "
        "absolute (relative) difference of the loss per step."
    )
    echo(f"wrote {files['loss_plot']}, {files['reconstructions']}, {files['report']}")
    echo(f"total {report['total_seconds']:.1f} s")
    return report


def run(args: argparse.Namespace) -> int:
    """Entry point of ``unrolled demo``: 0 on success, 2 on a bad setting."""
    # Bad settings (and missing data) are reported in one line; anything failing later is a
    # bug and keeps its traceback.
    try:
        cfg = config_from_args(args)
        resolved = cfg.resolved()
        build_data(resolved)
        build_physics(resolved)
    except (ValueError, ImportError, OSError) as err:
        print(f"unrolled demo: error: {err}", file=sys.stderr)
        return 2
    run_demo(cfg)
    return 0
