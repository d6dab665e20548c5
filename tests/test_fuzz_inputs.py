"""Property-based tests of the remaining inputs: noise models, Gaussian kernels and the
DnCNN denoiser (shapes, dtypes, noise levels). Each test knows whether its example is
valid: a valid one must compute a finite result with the documented shape, dtype and
statistics, a faulty one must be refused with the error for its first fault, naming
the argument at fault."""

from __future__ import annotations

import math
from collections import Counter
from numbers import Real

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unrolled.models import DnCNN
from unrolled.physics import GaussianNoise, PoissonNoise, gaussian_kernel

from .test_fuzz_operators import DTYPES, TYPE_FAULT_ERROR, expect_refusal

OUTCOMES: Counter = Counter()
LEVELS = st.one_of(
    st.floats(0, 2),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.just("0.1"),
    st.none(),
)


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\n[fuzz inputs] {sum(OUTCOMES.values())} examples: {dict(OUTCOMES)}")


def level_fault(name: str, value) -> tuple[type[Exception], str] | None:
    """A noise level must be a finite number >= 0 (a bool or a string is the wrong type)."""
    if isinstance(value, torch.Tensor):
        return (
            None if bool((value >= 0).all() and torch.isfinite(value).all()) else (ValueError, name)
        )
    if isinstance(value, bool) or not isinstance(value, Real):
        return TYPE_FAULT_ERROR, name
    return None if math.isfinite(value) and value >= 0 else (ValueError, name)


def gaussian_noise_fault(sigma, tensor_sigma, dtype):
    """The first fault GaussianNoise(sigma)(y) meets: the level at construction, then y's
    dtype, then the level against y (its shape, the largest value y's dtype can hold)."""
    fault = level_fault("sigma", sigma)
    if fault is not None:
        return fault
    if dtype in (torch.int64, torch.bool):
        return ValueError, "y"
    if tensor_sigma == "wrong-shape":
        return ValueError, "sigma"
    real = dtype.to_real() if dtype.is_complex else dtype
    level = float(sigma.max()) if isinstance(sigma, torch.Tensor) else sigma
    return (ValueError, "sigma") if level > torch.finfo(real).max / 16 else None


@settings(max_examples=80, deadline=None)
@given(
    sigma=LEVELS,
    tensor_sigma=st.sampled_from([None, "scalar", "per-sample", "negative", "wrong-shape"]),
    dtype=st.sampled_from([*DTYPES, torch.int64, torch.bool]),
    shape=st.tuples(st.integers(1, 3), st.integers(1, 2), st.integers(1, 16), st.integers(1, 16)),
    seed=st.integers(0, 2**31 - 1),
)
def test_gaussian_noise(sigma, tensor_sigma, dtype, shape, seed):
    if tensor_sigma == "scalar":
        sigma = torch.tensor(0.3)
    elif tensor_sigma == "per-sample":
        sigma = torch.full((shape[0], 1, 1, 1), 0.3)
    elif tensor_sigma == "negative":
        sigma = torch.tensor(-0.3)
    elif tensor_sigma == "wrong-shape":
        sigma = torch.full((shape[0] + 1, 5, 1, 1), 0.3)
    y = torch.zeros(shape, dtype=dtype)
    fault = gaussian_noise_fault(sigma, tensor_sigma, dtype)
    if fault is not None:
        error, argument = fault
        expect_refusal(
            lambda: GaussianNoise(sigma, generator=seed)(y), error, argument, "gaussian", OUTCOMES
        )
        return
    noisy = GaussianNoise(sigma, generator=seed)(y)
    assert noisy.dtype == dtype and noisy.shape == y.shape
    assert torch.isfinite(noisy).all()
    level = float(sigma) if not torch.is_tensor(sigma) else 0.3
    n = noisy.numel() * (2 if dtype.is_complex else 1)
    # (levels near float32's smallest numbers underflow in sigma * n: no statistics there)
    if level > 1e-30 and n >= 256:
        # The sample standard deviation of n normals is within 5 / sqrt(2n) relative.
        std = float(torch.view_as_real(noisy).std() if dtype.is_complex else noisy.std())
        std *= math.sqrt(2) if dtype.is_complex else 1  # each part has variance 1/2
        assert abs(std - level) <= 5 * level / math.sqrt(2 * n)
    OUTCOMES["gaussian noise: ok"] += 1


def poisson_noise_fault(gain, y: torch.Tensor):
    """The first fault PoissonNoise(gain)(y) meets: the gain (a number > 0), then y (real,
    >= 0), then the gain against y's dtype and the largest countable rate."""
    fault = level_fault("gain", gain)
    if fault is not None or gain == 0:
        return fault or (ValueError, "gain")
    if y.is_complex() or bool((y < 0).any()):
        return ValueError, "y"
    if gain > torch.finfo(y.dtype).max or bool((y / gain > 1e18).any()):
        return ValueError, "gain"
    return None


@settings(max_examples=50, deadline=None)
@given(
    gain=st.one_of(st.floats(0.01, 10), st.floats(0.01, 10), st.floats(1e-12, 1e3), LEVELS),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float64, torch.complex64]),
    negative=st.sampled_from([False, False, False, True]),
    seed=st.integers(0, 2**31 - 1),
)
def test_poisson_noise(gain, dtype, negative, seed):
    y = torch.full((2, 1, 4, 4), -1.0 if negative else 3.0).to(dtype)
    fault = poisson_noise_fault(gain, y)
    if fault is not None:
        error, argument = fault
        expect_refusal(
            lambda: PoissonNoise(gain, generator=seed)(y), error, argument, "poisson", OUTCOMES
        )
        return
    noisy = PoissonNoise(gain, generator=seed)(y)
    assert noisy.dtype == dtype and noisy.shape == y.shape
    assert torch.isfinite(noisy).all() and (noisy >= 0).all()
    # gain * Poisson(y / gain): every value is a multiple of the gain.
    counts = noisy.double() / gain
    assert torch.allclose(counts, counts.round(), atol=1e-3 * max(1.0, float(counts.max())))
    OUTCOMES["poisson noise: ok"] += 1


def gaussian_kernel_fault(sigma, size) -> tuple[type[Exception], str] | None:
    """The first fault gaussian_kernel meets: sigma (one or two finite values > 0, not a
    bool, the default size at most MAX_KERNEL_SIZE), then size (an integer or a pair in
    [1, 4097], not a bool)."""
    sides = sigma if isinstance(sigma, tuple) else (sigma, sigma)
    if any(isinstance(s, bool) for s in sides):
        return TYPE_FAULT_ERROR, "sigma"
    if len(sides) != 2 or not all(math.isfinite(s) and s > 0 for s in sides):
        return ValueError, "sigma"
    if size is None and max(sides) > (4097 - 1) / 6:
        return ValueError, "sigma"
    if isinstance(size, bool):
        return TYPE_FAULT_ERROR, "size"
    if isinstance(size, int) and not 1 <= size <= 4097:
        return ValueError, "size"
    return None


@settings(max_examples=60, deadline=None)
@given(
    sigma=st.one_of(
        st.floats(0.05, 5),
        st.tuples(st.floats(0.05, 5), st.floats(0.05, 5)),
        st.floats(allow_nan=True, allow_infinity=True),
        st.tuples(st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1)),
        st.booleans(),
    ),
    size=st.one_of(
        st.none(),
        st.integers(-2, 9),
        st.tuples(st.integers(1, 9), st.integers(1, 9)),
        st.booleans(),
    ),
)
def test_gaussian_kernel(sigma, size):
    fault = gaussian_kernel_fault(sigma, size)
    if fault is not None:
        error, argument = fault
        call = lambda: gaussian_kernel(sigma, size, dtype=torch.float64)  # noqa: E731
        expect_refusal(call, error, argument, "gaussian kernel", OUTCOMES)
        return
    k = gaussian_kernel(sigma, size, dtype=torch.float64)
    expected = (size, size) if isinstance(size, int) else size
    if size is None:
        sides = sigma if isinstance(sigma, tuple) else (sigma, sigma)
        expected = tuple(2 * math.ceil(3 * float(s)) + 1 for s in sides)
    assert k.shape == expected
    assert k.ndim == 2 and torch.isfinite(k).all() and (k >= 0).all()  # tiny sigma: a delta
    assert abs(float(k.sum()) - 1) <= 1e-12
    assert torch.allclose(k, k.flip(0, 1))  # symmetric about its centre
    OUTCOMES["gaussian kernel: ok"] += 1


def dncnn_fault(x: torch.Tensor, channels: int, sigma):
    """The first fault DnCNN(x, sigma) meets: x (real, (B, channels, H, W), the weights'
    dtype, which the test gives real images), then sigma (a finite level >= 0 that x's
    dtype holds: a number, or a tensor of one or B values)."""
    if x.is_complex() or x.ndim != 4 or x.shape[1] != channels:
        return ValueError, "x"
    if isinstance(sigma, str):
        return TYPE_FAULT_ERROR, "sigma"
    if isinstance(sigma, torch.Tensor):
        fits = sigma.numel() == 1 or tuple(sigma.shape) == (x.shape[0],)
        ok = fits and bool((sigma >= 0).all() and torch.isfinite(sigma).all())
        return None if ok else (ValueError, "sigma")
    ok = math.isfinite(sigma) and 0 <= sigma <= torch.finfo(x.dtype).max
    return None if ok else (ValueError, "sigma")


@settings(max_examples=60, deadline=None)
@given(
    channels=st.integers(1, 3),
    shape=st.tuples(st.integers(1, 2), st.integers(0, 4), st.integers(1, 9), st.integers(1, 9)),
    right_channels=st.sampled_from([True, True, True, False]),
    ndim=st.sampled_from([4, 4, 4, 4, 3, 5]),
    dtype=st.sampled_from([torch.float32, torch.float32, torch.float64, torch.complex64]),
    sigma=st.one_of(
        st.floats(0, 1),
        st.floats(0, 1),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(["per-sample", "wrong-shape", "negative-tensor", "string"]),
    ),
)
def test_dncnn_inputs(channels, shape, right_channels, ndim, dtype, sigma):
    if right_channels:
        shape = (shape[0], channels, *shape[2:])
    torch.manual_seed(0)
    model = DnCNN(channels, channels, depth=2, features=4)
    if not dtype.is_complex:
        model = model.to(dtype)  # the documented use; a mismatch is refused (test below)
    shape = shape[:ndim] if ndim < 4 else shape + (1,) * (ndim - 4)
    x = torch.rand(shape).to(dtype)
    if sigma == "per-sample":
        sigma = torch.rand(shape[0])
    elif sigma == "wrong-shape":
        sigma = torch.rand(shape[0] + 1, 2)
    elif sigma == "negative-tensor":
        sigma = -torch.rand(shape[0])
    fault = dncnn_fault(x, channels, sigma)
    if fault is not None:
        error, argument = fault
        expect_refusal(lambda: model(x, sigma), error, argument, "dncnn", OUTCOMES)
        return
    out = model(x, sigma)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all(), "NaN/inf from finite input"
    OUTCOMES["dncnn: ok"] += 1


def test_dncnn_refuses_an_image_of_another_dtype():
    model = DnCNN(1, 1, depth=2, features=4)
    with pytest.raises(ValueError, match="x:"):
        model(torch.rand(1, 1, 8, 8, dtype=torch.float64), 0.1)


def test_dncnn_refuses_a_noise_level_beyond_the_dtype():
    model = DnCNN(1, 1, depth=2, features=4)
    with pytest.raises(ValueError, match="sigma:"):
        model(torch.rand(1, 1, 8, 8), 3.5e38)
