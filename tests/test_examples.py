"""The example scripts run to the end (at small sizes) and say what they claim."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_memory_efficient_unfolded_example_runs():
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        OMP_NUM_THREADS="1",
    )
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "memory_efficient_unfolded.py"),
            *("--img-size", "20", "--num-images", "4", "--batch-size", "2", "--steps", "2"),
            *("--layers", "2", "--depth", "3", "--features", "8", "--blur-sigma", "1.0"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "test PSNR after training" in out
    peaks = dict(
        re.findall(
            r"^  (unroll|implicit|implicit \+ layer checkpointing)\s+peak\s+([\d.]+) MB", out, re.M
        )
    )
    assert set(peaks) == {"unroll", "implicit", "implicit + layer checkpointing"}, out
    # The ordering the example teaches: implicit below unroll, checkpointing below both.
    assert float(peaks["implicit"]) < float(peaks["unroll"])
    assert float(peaks["implicit + layer checkpointing"]) < float(peaks["implicit"])
    # The gradients it prints agree with unroll's to CG's float32 accuracy: CG solves to
    # 1e-8, below float32's rounding (eps 1.2e-7), so the two gradients differ by rounding
    # in the solve and in the few layers around it, far below 1e3 eps (and not zero: the
    # implicit gradient is another computation, a second solve, not unroll's own).
    errors = dict(
        re.findall(r"^  gradient of (.+?)\s+relative difference to unroll: ([\d.e+-]+)$", out, re.M)
    )
    assert set(errors) == set(peaks), out
    assert 0 < float(errors["implicit"]) < 1e3 * 1.2e-7, out
    # Layer checkpointing recomputes the same layers in backward: the same gradient, to
    # the digit, as the implicit backward without it.
    assert errors["implicit + layer checkpointing"] == errors["implicit"], out
