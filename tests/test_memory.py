"""Memory meters: saved-for-backward bytes, the allocation peak, and the RSS cross-check."""

from __future__ import annotations

import pytest
import torch
from torch.utils.checkpoint import checkpoint

import unrolled as ur
from unrolled.train import PeakMemoryMeter, SavedTensorMeter, _profiler, peak_rss_subprocess


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_saved_tensor_meter_counts_a_storage_once_and_releases_it():
    a = torch.randn(1000, generator=seeded(0), dtype=torch.float32, requires_grad=True)
    with SavedTensorMeter() as meter:
        # mul saves both operands: here the same storage, twice.
        y = (a * a).sum()
    assert meter.saved_bytes == 1000 * 4
    assert meter.peak_saved_bytes == 1000 * 4
    assert meter.current_bytes == 1000 * 4
    y.backward()
    assert meter.current_bytes == 0
    assert torch.allclose(a.grad, 2 * a.detach())


def test_saved_tensor_meter_counts_views_of_one_storage_once():
    a = torch.randn(2, 500, generator=seeded(1), dtype=torch.float64, requires_grad=True)
    with SavedTensorMeter() as meter:
        y = (a[0] * a[1]).sum()  # two views of one storage
    assert meter.saved_bytes == 1000 * 8
    y.backward()
    assert meter.current_bytes == 0


@pytest.mark.parametrize("path", ["private", "public"])
def test_peak_meter_closed_form(path, monkeypatch):
    if path == "public":  # what a torch release outside the checked range takes
        monkeypatch.setattr(_profiler, "PRIVATE_RANGE", ((0, 0), (0, 0)))
    elif not _profiler.uses_private_profiler():
        pytest.skip(f"torch {torch.__version__} is outside {_profiler.PRIVATE_RANGE}")
    n = 10**6
    with PeakMemoryMeter("cpu") as meter:
        a = torch.empty(n, dtype=torch.float32)
        del a
        b = torch.empty(n // 2, dtype=torch.float32)
        del b
    # 4 MB held at most at once; the second buffer comes after the first is freed.
    assert 4 * n <= meter.peak_bytes < 4 * n + 64 * 1024


def test_private_profiler_only_on_checked_releases(monkeypatch):
    low, high = _profiler.PRIVATE_RANGE
    for version, expected in [
        (f"{low[0]}.{low[1]}.0", True),
        (f"{high[0]}.{high[1]}.1+cpu", True),
        (f"{high[0]}.{high[1] + 1}.0.dev20260101+cu124", False),
        (f"{low[0]}.{low[1] - 1}.0", False),
    ]:
        monkeypatch.setattr(torch, "__version__", version)
        assert _profiler.uses_private_profiler() is expected, version


def test_peak_meter_rejects_unknown_device():
    with pytest.raises(ValueError, match="device"):
        PeakMemoryMeter("meta")


def _prox_peak(mode: str, max_iter: int) -> tuple[int, int, int]:
    torch.manual_seed(0)
    physics = ur.physics.Blur(ur.physics.gaussian_kernel(1.0, dtype=torch.float64), padding="valid")
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    y = physics.A(x)
    z = torch.rand_like(x, requires_grad=True)
    # gamma = 1e3 makes A^T A + I/gamma poorly conditioned: CG runs all max_iter steps.
    # (no preconditioner: an exact one would end the solve at once)
    solver = ur.CG(
        max_iter=max_iter, tol=0, stop_at_floor=False, on_failure="ignore", preconditioner=None
    )
    with PeakMemoryMeter("cpu") as meter:
        h, info = ur.linalg.prox_l2_with_info(physics, z, y, 1e3, solver=solver, backward=mode)
        h.square().sum().backward()
    assert info.forward.iterations.tolist() == [max_iter, max_iter]
    assert bool((info.forward.residual > 0).all())
    if mode == "implicit":
        assert info.backward.iterations.tolist() == [max_iter, max_iter]
    return meter.peak_bytes, x.numel() * x.element_size(), info.forward.iterations


def test_implicit_peak_is_flat_and_below_unroll():
    few, many = 3, 12
    unroll_few, image_bytes, _ = _prox_peak("unroll", few)
    unroll_many, _, _ = _prox_peak("unroll", many)
    implicit_few, _, _ = _prox_peak("implicit", few)
    implicit_many, _, _ = _prox_peak("implicit", many)
    # Unroll keeps at least one new image-sized iterate per CG step.
    assert unroll_many - unroll_few >= (many - few) * image_bytes
    # Implicit keeps no iterate: at most one image's worth of difference.
    assert abs(implicit_many - implicit_few) <= image_bytes
    assert implicit_few < unroll_few
    assert implicit_many < unroll_many


def test_peak_meter_counts_checkpoint_recomputation():
    n = 2**16
    nbytes = 4 * n
    x = torch.randn(n, generator=seeded(2), requires_grad=True)

    def f(t):
        return t.sin().sin().sin().sin()

    with PeakMemoryMeter() as meter:
        out = checkpoint(f, x, use_reentrant=False).sum()
    forward_peak = meter.peak_bytes
    with PeakMemoryMeter() as meter:
        with SavedTensorMeter() as saved:
            out = checkpoint(f, x, use_reentrant=False).sum()
        out.backward()
    # Backward recomputes the three intermediate sines and holds them together (each
    # sin saves its input) while it runs: at least 3 arrays, beyond the forward peak.
    assert meter.peak_bytes >= 3 * nbytes
    assert meter.peak_bytes > forward_peak + nbytes
    # The saved-tensor meter does not see what checkpointing saves under its own hooks.
    assert saved.peak_saved_bytes < 3 * nbytes


def _allocate(numel: int) -> float:
    t = torch.ones(numel, dtype=torch.float64)
    return float(t.sum())


def test_peak_rss_subprocess_sees_an_allocation():
    numel = 4 * 2**20  # 32 MiB of float64, touched by ones()
    report = peak_rss_subprocess(_allocate, numel, timeout=120)
    assert report.result == float(numel)
    assert report.peak_above_baseline_bytes >= 0.9 * numel * 8
    assert report.peak_above_baseline_bytes < 3 * numel * 8 + 64 * 2**20


def test_peak_rss_child_reports_errors_and_paths_are_checked():
    # The child's error path, run in this process (a spawn costs seconds).
    import multiprocessing

    from unrolled.train.rss import _rss_child

    parent, child = multiprocessing.Pipe(duplex=False)
    _rss_child(child, "math:sqrt", None, (-1.0,), {}, [])
    status, payload = parent.recv()
    assert status == "error" and "ValueError" in payload
    with pytest.raises(ValueError, match="fn"):
        peak_rss_subprocess("no_colon_here")
    with pytest.raises(TypeError, match="setup"):
        peak_rss_subprocess(_allocate, 1, setup=42)
