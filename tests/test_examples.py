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
    # The gradients it prints agree with unroll's to CG's float32 accuracy.
    errors = [float(e) for e in re.findall(r"relative difference to unroll: ([\d.e+-]+)", out)]
    assert len(errors) == 3 and errors[0] == 0.0 and max(errors) < 1e-3, out
