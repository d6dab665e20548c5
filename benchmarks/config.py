"""Benchmark settings: the seed configuration, its ``--quick`` and CUDA variants, and
the description of the machine a run was made on."""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
from dataclasses import dataclass

import torch

__all__ = [
    "MODES",
    "OURS",
    "DEEPINV",
    "SECTIONS",
    "BenchConfig",
    "preset",
    "machine_info",
]

#: training modes: the data step's backward, or ``"denoiser"`` (no data step at all:
#: the lower bound), or deepinv's data step with its two backward modes.
OURS = ("unroll", "implicit", "checkpoint")
DEEPINV = ("deepinv-unroll", "deepinv-implicit")
MODES = ("denoiser", *OURS, "implicit+layers", *DEEPINV)
SECTIONS = ("main", "rss", "cg", "scaling")
PADDINGS = ("valid", "reflect", "replicate", "zeros", "circular")


@dataclass(frozen=True)
class BenchConfig:
    """Everything a benchmark run depends on; stored in the JSON next to the figures.

    The network is the seed one: unfolded HQS (``layers``) with a PnP DnCNN
    (``depth`` convolutions of ``features`` channels), trainable step sizes and noise
    levels, Adam; the data are dead-leaves images blurred by a Gaussian
    (``blur_sigma``, ``padding``) with Gaussian noise (``noise``); the data step is
    solved by CG (``max_iter``, ``tol``).
    """

    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 0  # 0: every core this process may use
    seed: int = 0
    layers: int = 5
    depth: int = 7
    features: int = 64
    channels: int = 3
    stepsize: float = 1.0
    sigma: float = 0.01
    blur_sigma: float = 2.5
    padding: str = "valid"
    noise: float = 0.1
    max_iter: int = 100
    tol: float = 1e-8
    check_every: int = 1
    lr: float = 5e-4
    # main table
    sizes: tuple[int, ...] = (32, 64)
    batch: int = 8
    warmup: int = 2
    iters: int = 10
    modes: tuple[str, ...] = ("denoiser", *OURS, *DEEPINV)
    peak_alloc: bool = True
    # float64 reference gradient
    ref_max_iter: int = 2000
    ref_tol: float = 1e-13
    # peak RSS, one process per mode
    rss_modes: tuple[str, ...] = ("denoiser", *OURS, *DEEPINV)
    rss_steps: int = 2
    rss_timeout: float = 900.0
    # CG iterations to the floor
    cg_paddings: tuple[str, ...] = PADDINGS
    cg_extra_gammas: tuple[float, ...] = (10.0, 100.0)
    cg_max_iter: int = 1000
    # scaling
    scale_max_iters: tuple[int, ...] = (10, 30, 100, 300)
    scale_max_iter_size: int = 64
    scale_max_iter_modes: tuple[str, ...] = ("implicit", "checkpoint", "unroll", *DEEPINV)
    scale_sizes: tuple[int, ...] = (32, 64, 128, 256)
    scale_batches: tuple[int, ...] = (1, 2, 4, 8, 16)
    scale_modes: tuple[str, ...] = ("denoiser", "implicit", "unroll")
    scale_warmup: int = 1
    # one timed step per point: the 256x256 points cost about 20 s a step on 2 cores
    scale_iters: int = 1
    # the profiler behind the CPU peak-allocated figure slows a step down 1.5-3x: the
    # sweeps report saved bytes only unless asked
    scale_peak_alloc: bool = False
    sections: tuple[str, ...] = SECTIONS

    def __post_init__(self):
        for name in ("modes", "rss_modes", "scale_max_iter_modes", "scale_modes"):
            bad = [m for m in getattr(self, name) if m not in MODES]
            if bad:
                raise ValueError(f"{name}: expected modes among {MODES}, got {bad}")
        bad = [s for s in self.sections if s not in SECTIONS]
        if bad:
            raise ValueError(f"sections: expected among {SECTIONS}, got {bad}")
        bad = [p for p in self.cg_paddings if p not in PADDINGS]
        if bad:
            raise ValueError(f"cg_paddings: expected among {PADDINGS}, got {bad}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {self.dtype!r}")
        kernel = 2 * int(-(-3 * self.blur_sigma // 1)) + 1
        sizes = (*self.sizes, *self.scale_sizes, self.scale_max_iter_size)
        if self.padding == "valid" and min(sizes) < kernel:
            raise ValueError(
                f"sizes: expected images of at least the blur kernel ({kernel} px for "
                f"blur_sigma={self.blur_sigma}) with valid padding, got {min(sizes)}"
            )
        for name in ("warmup", "scale_warmup"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1 (the warm-up step is metered), got 0")
        for name in ("iters", "scale_iters", "batch", "layers", "rss_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {getattr(self, name)}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def replace(self, **changes) -> BenchConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def preset(name: str) -> BenchConfig:
    """``"default"`` (seed configuration, CPU, about 10 minutes on 2 cores), ``"quick"``
    (a smoke run of every section in a minute or two) or ``"cuda"`` (the seed GPU
    configuration: 64x64, batch 32; a few minutes on one GPU)."""
    if name == "default":
        return BenchConfig()
    if name == "quick":
        return BenchConfig(
            sizes=(32,),
            batch=4,
            warmup=1,
            iters=3,
            rss_steps=1,
            cg_extra_gammas=(100.0,),
            scale_max_iters=(10, 30),
            scale_max_iter_size=32,
            scale_sizes=(24, 32),
            scale_batches=(2, 4),
            scale_iters=1,
        )
    if name == "cuda":
        return BenchConfig(
            device="cuda",
            sizes=(64,),
            batch=32,
            warmup=3,
            iters=20,
            check_every=10,
            sections=("main", "cg", "scaling"),
            scale_max_iter_size=64,
            scale_sizes=(32, 64, 128, 256),
            scale_batches=(8, 16, 32, 64),
            scale_modes=("denoiser", "implicit", "unroll", "checkpoint"),
            scale_iters=5,
            scale_peak_alloc=True,
        )
    raise ValueError(f"preset: expected 'default', 'quick' or 'cuda', got {name!r}")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict:
    """What the figures depend on: CPU, cores, threads, versions, GPU, load."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    info = {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_version": torch.__version__,
        "python_version": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda_version"] = torch.version.cuda
    return info
