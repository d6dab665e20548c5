"""Multi-process training on ``torch.distributed``: joining the process group that
``torchrun`` describes, starting N local processes without it, and the collectives the
trainer needs.

Two ways to start ``N`` processes on one machine::

    unrolled train --config run.toml --nproc 2          # spawns the processes itself
    torchrun --standalone --nproc-per-node 2 -m unrolled train --config run.toml

Each process is one rank: ``gloo`` on CPU, ``nccl`` on CUDA (one GPU per process,
``cuda:LOCAL_RANK``). The :class:`~unrolled.train.Trainer` wraps the model in
``DistributedDataParallel`` when the process group has more than one member.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import traceback
import warnings
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from .._validation import check_int

__all__ = [
    "agreed_signal",
    "all_reduce_sum",
    "backend_for",
    "barrier",
    "check_sharded",
    "free_port",
    "init_from_env",
    "is_distributed",
    "launch",
    "rank",
    "shutdown",
    "world_size",
    "wrap",
]

#: environment variables ``torchrun`` sets and :func:`init_from_env` reads
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def is_distributed() -> bool:
    """Whether a process group with more than one member is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def backend_for(device: torch.device | str) -> str:
    """``"nccl"`` for CUDA devices, ``"gloo"`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_from_env(
    device: torch.device | str = "auto",
    *,
    backend: str | None = None,
    timeout_s: float = 600.0,
) -> torch.device:
    """Join the process group described by ``torchrun``'s environment and return this
    process's device.

    Without ``WORLD_SIZE`` in the environment (a plain single-process run) nothing is
    initialised. ``device``: ``"auto"`` (``cuda:LOCAL_RANK`` when CUDA is available, else
    CPU), ``"cpu"``, or ``"cuda"`` (made ``cuda:LOCAL_RANK``).
    """
    if device not in ("auto", "cpu", "cuda") and not isinstance(device, torch.device):
        device = torch.device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if "WORLD_SIZE" not in os.environ or dist.is_initialized():
        return device
    missing = [k for k in ENV_KEYS if k not in os.environ]
    if missing:
        raise ValueError(
            f"environment: WORLD_SIZE is set but {missing} are not; start the processes with "
            "torchrun or unrolled train --nproc N"
        )
    dist.init_process_group(
        backend=backend or backend_for(device),
        init_method="env://",
        timeout=timedelta(seconds=timeout_s),
    )
    return device


def shutdown() -> None:
    """Leave the process group, if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op without a process group)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``values`` over all processes (``values`` itself alone)."""
    if is_distributed():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def agreed_signal(received: int | None, device: torch.device) -> int | None:
    """The signal that asks every process to stop: any process's ``received``, agreed
    over the processes so that all stop after the same step (``received`` alone)."""
    if not is_distributed():
        return received
    flag = torch.tensor([float(received or 0)], dtype=torch.float64, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


def wrap(module: torch.nn.Module, device: torch.device, options: dict | None = None):
    """``module`` in ``DistributedDataParallel`` in a multi-process run, else itself."""
    if not is_distributed():
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, **(options or {}))


def check_sharded(data: Any) -> None:
    """Warn when a multi-process run would give every process the whole of ``data``."""
    if not is_distributed():
        return
    sampler = getattr(data, "sampler", None)
    batch_sampler = getattr(data, "batch_sampler", None)
    inner = getattr(batch_sampler, "sampler", None)
    if not any(hasattr(s, "set_epoch") for s in (sampler, batch_sampler, inner)):
        warnings.warn(
            "train_data: in a multi-process run each process should read its own shard "
            "(a DistributedSampler, e.g. Trainer.make_loader(...) makes one); this loader "
            "has none, so every process reads all the data",
            RuntimeWarning,
            stacklevel=3,
        )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (for ``MASTER_PORT``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _entry(local_rank: int, fn: Callable, nproc: int, host: str, port: int, args: tuple) -> None:
    os.environ.update(
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(nproc),
        LOCAL_WORLD_SIZE=str(nproc),
        MASTER_ADDR=host,
        MASTER_PORT=str(port),
    )
    code = fn(*args)
    if code:
        sys.exit(int(code))


def launch(
    fn: Callable[..., Any],
    nproc: int,
    *args: Any,
    host: str = "127.0.0.1",
    port: int | None = None,
) -> int:
    """Run ``fn(*args)`` in ``nproc`` fresh processes (``spawn``) as ranks ``0..nproc-1``.

    Each process gets the environment ``torchrun`` would give it (``RANK``,
    ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR=host``, ``MASTER_PORT=port``, default a
    free port), so ``fn`` calls :func:`init_from_env` as under ``torchrun``. ``fn`` must
    be importable (a module-level function). SIGINT and SIGTERM received by this process
    are passed on to the workers as SIGTERM (each then writes its checkpoint and exits).

    Returns 0 when every process returned a falsy value, else the first non-zero exit
    code (``fn``'s integer return value, ``128 + signal`` for a killed process, 1 for an
    exception, whose traceback is printed).
    """
    check_int("nproc", nproc, minimum=1)
    import torch.multiprocessing as mp

    port = free_port(host) if port is None else port
    context = mp.start_processes(
        _entry,
        args=(fn, nproc, host, port, args),
        nprocs=nproc,
        join=False,
        start_method="spawn",
    )

    def forward(signum, frame):
        # Ctrl-C in a terminal reaches the workers too (same process group): passing it on
        # as SIGTERM keeps the workers' "second SIGINT = stop now" for a second Ctrl-C.
        for p in context.processes:
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(p.pid, signal.SIGTERM)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: no forwarding
            previous[sig] = signal.signal(sig, forward)
    try:
        while not context.join(timeout=0.2):
            pass
        return 0
    except mp.ProcessExitedException as err:
        code = err.exit_code
        return 128 - code if code < 0 else int(code)
    except mp.ProcessRaisedException as err:
        print(f"unrolled: process {err.error_index} failed:\n{err}", file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 - report and give a failing exit code
        traceback.print_exc()
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for p in context.processes:
            if p.is_alive():
                p.terminate()
