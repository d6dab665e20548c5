"""Property-based tests of the remaining inputs: noise models, Gaussian kernels and the
DnCNN denoiser (shapes, dtypes, noise levels). Each example either computes a finite
result with the documented shape, dtype and statistics, or raises ValueError/TypeError
naming the argument."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unrolled.models import DnCNN
from unrolled.physics import GaussianNoise, PoissonNoise, gaussian_kernel

from .test_fuzz_operators import DTYPES, expect_clean_error

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
    try:
        noisy = GaussianNoise(sigma, generator=seed)(y)
    except Exception as err:  # noqa: BLE001 - classified below
        expect_clean_error(err, "gaussian noise", OUTCOMES)
        return
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


@settings(max_examples=50, deadline=None)
@given(
    gain=st.one_of(st.floats(0.01, 10), st.floats(0.01, 10), st.floats(1e-12, 1e3), LEVELS),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float64, torch.complex64]),
    negative=st.sampled_from([False, False, False, True]),
    seed=st.integers(0, 2**31 - 1),
)
def test_poisson_noise(gain, dtype, negative, seed):
    y = torch.full((2, 1, 4, 4), -1.0 if negative else 3.0).to(dtype)
    try:
        noisy = PoissonNoise(gain, generator=seed)(y)
    except Exception as err:  # noqa: BLE001 - classified below
        expect_clean_error(err, "poisson noise", OUTCOMES)
        return
    assert not negative and noisy.dtype == dtype and noisy.shape == y.shape
    assert torch.isfinite(noisy).all() and (noisy >= 0).all()
    # gain * Poisson(y / gain): every value is a multiple of the gain.
    counts = noisy.double() / gain
    assert torch.allclose(counts, counts.round(), atol=1e-3 * max(1.0, float(counts.max())))
    OUTCOMES["poisson noise: ok"] += 1


@settings(max_examples=60, deadline=None)
@given(
    sigma=st.one_of(
        st.floats(0.05, 5),
        st.tuples(st.floats(0.05, 5), st.floats(0.05, 5)),
        st.floats(allow_nan=True, allow_infinity=True),
        st.tuples(st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1)),
        st.booleans(),
    ),
    size=st.one_of(st.none(), st.integers(-2, 9), st.tuples(st.integers(1, 9), st.integers(1, 9))),
)
def test_gaussian_kernel(sigma, size):
    try:
        k = gaussian_kernel(sigma, size, dtype=torch.float64)
    except Exception as err:  # noqa: BLE001 - classified below
        expect_clean_error(err, "gaussian kernel", OUTCOMES)
        return
    assert k.ndim == 2 and torch.isfinite(k).all() and (k >= 0).all()  # tiny sigma: a delta
    assert abs(float(k.sum()) - 1) <= 1e-12
    assert torch.allclose(k, k.flip(0, 1))  # symmetric about its centre
    OUTCOMES["gaussian kernel: ok"] += 1


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
    try:
        out = model(x, sigma)
    except Exception as err:  # noqa: BLE001 - classified below
        expect_clean_error(err, "dncnn", OUTCOMES)
        return
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
