"""Peak resident memory of one call, measured in a fresh process.

:func:`peak_rss_subprocess` cross-checks :class:`~unrolled.train.PeakMemoryMeter` from
outside: the high-water mark of the resident set of a separate (spawned) process,
over one call, above what the process held before it.
"""

from __future__ import annotations

import importlib
import multiprocessing
import resource
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["RSSReport", "peak_rss_subprocess"]


@dataclass
class RSSReport:
    """Resident memory of a child process that ran one measured call.

    ``baseline_bytes``: resident set after imports and ``setup``, before the call.
    ``peak_bytes``: the high-water mark of the resident set during the call
    (``VmHWM``, reset before the call where the kernel allows it).
    ``peak_above_baseline_bytes``: ``peak_bytes - baseline_bytes``, the figure to compare.
    ``hwm_reset``: whether the high-water mark could be reset before the call; when not
    (no ``/proc/self/clear_refs``), the peak may date from the imports and
    ``ru_maxrss`` is used, which can only over-estimate.
    ``result``: what the call returned (it must be picklable).
    """

    baseline_bytes: int
    peak_bytes: int
    peak_above_baseline_bytes: int
    hwm_reset: bool
    result: Any = None


def _proc_status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _split_path(fn: str, what: str = "fn") -> tuple[str, str]:
    module, sep, name = fn.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"{what}: expected 'package.module:function', got {fn!r}")
    return module, name


def _resolve(fn):
    if isinstance(fn, str):
        module, name = _split_path(fn)
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj
    return fn


def _rss_child(conn, fn, setup, args, kwargs, sys_path) -> None:
    try:
        sys.path[:0] = [p for p in sys_path if p not in sys.path]
        fn = _resolve(fn)
        setup = _resolve(setup) if setup is not None else None
        state = setup() if setup is not None else None
        baseline = _proc_status_bytes("VmRSS")
        reset = _reset_hwm()
        result = fn(state, *args, **kwargs) if setup is not None else fn(*args, **kwargs)
        peak = _proc_status_bytes("VmHWM") if reset else None
        if peak is None or baseline is None:
            # ru_maxrss is in kB on Linux (bytes on macOS) and never reset.
            scale = 1 if sys.platform == "darwin" else 1024
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
            baseline = baseline or 0
            reset = False
        conn.send(("ok", RSSReport(baseline, peak, max(peak - baseline, 0), reset, result)))
    except BaseException:  # noqa: BLE001 - reported to the parent
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def peak_rss_subprocess(
    fn: Callable[..., Any] | str,
    *args: Any,
    setup: Callable[[], Any] | str | None = None,
    timeout: float | None = None,
    **kwargs: Any,
) -> RSSReport:
    """Peak resident memory of ``fn(*args, **kwargs)`` run in a fresh (spawned) process.

    Args:
        fn: a module-level function, or its path ``"package.module:function"``; with
            ``setup`` it is called as ``fn(setup(), *args, **kwargs)``.
        setup: run in the child before the baseline is taken (build the model, the
            data...), so only the call itself is measured.
        timeout: seconds to wait for the child (``None``: no limit).

    Returns:
        an :class:`RSSReport`. Resident memory counts everything the process touches
        (allocator caches, libraries' buffers), so it bounds the tensor peak of
        :class:`PeakMemoryMeter` from above; the two should agree in order of magnitude
        and in the ordering of the configurations compared.

    Raises:
        RuntimeError: the child failed (its traceback is in the message) or timed out.
    """
    if not (callable(fn) or isinstance(fn, str)):
        raise TypeError(f"fn: expected a callable or 'module:function', got {type(fn).__name__}")
    if isinstance(fn, str):
        _split_path(fn)
    if setup is not None and not (callable(setup) or isinstance(setup, str)):
        raise TypeError(
            f"setup: expected a callable, 'module:function' or None, got {type(setup).__name__}"
        )
    if isinstance(setup, str):
        _split_path(setup, "setup")
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_rss_child, args=(child, fn, setup, args, kwargs, list(sys.path)), daemon=True
    )
    process.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise RuntimeError(f"peak_rss_subprocess: the child did not finish in {timeout} s")
        status, payload = parent.recv()
    except EOFError as err:
        raise RuntimeError(
            f"peak_rss_subprocess: the child died without a result (exit code "
            f"{process.exitcode}; killed for memory?)"
        ) from err
    finally:
        parent.close()
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join()
    if status != "ok":
        raise RuntimeError(f"peak_rss_subprocess: {fn!r} failed in the child:\n{payload}")
    return payload
