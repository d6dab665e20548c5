"""The learned-operator example: implicit and unrolled gradients of the kernel network agree."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "learned_operator.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("learned_operator", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gradient_check(example):
    """float64 and CG at tol 1e-14: the implicit gradient is exact up to the forward
    solve's accuracy (~1e-14 relative, amplified by the condition number <= 1 + gamma),
    so 1e-8 has a wide margin; a missing or wrong kernel gradient shows at O(1)."""
    result = example.gradient_check(seed=0)
    assert set(result) == {"kernel_net", "denoiser", "gamma"}
    for name, rel in result.items():
        assert rel <= 1e-8, name


def test_training_runs(example, capsys):
    example.main(["--steps", "3"])
    out = capsys.readouterr().out
    assert "OK" in out and "trained 3 steps" in out
