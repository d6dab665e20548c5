"""Metrics, the determined region and the classical baselines against independent values."""

import math

import numpy as np
import pytest
import torch

from unrolled.evaluation import (
    Baseline,
    determined_region,
    fit_baselines,
    format_scores,
    psnr,
    score_methods,
    smooth_least_squares,
    ssim,
    tikhonov,
)
from unrolled.physics import Blur, GaussianNoise, Inpainting, gaussian_kernel, normalized_adjoint


def test_psnr_hand_computed_whole_image_and_region():
    x = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    x_hat = torch.tensor([[[[0.1, 0.0], [0.0, 0.3]]]], dtype=torch.float64)
    # MSE over all four pixels: (0.01 + 0.09) / 4 = 0.025.
    assert psnr(x_hat, x).item() == pytest.approx(10 * math.log10(1 / 0.025), abs=1e-12)
    region = torch.tensor([[True, False], [False, False]])
    assert psnr(x_hat, x, region=region).item() == pytest.approx(20.0, abs=1e-12)  # MSE 0.01
    assert psnr(x_hat, x, 2.0).item() == pytest.approx(10 * math.log10(4 / 0.025), abs=1e-12)


def test_psnr_refuses_an_empty_region():
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="region"):
        psnr(x, x + 1, region=torch.zeros(2, 2, dtype=torch.bool))


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_scikit_image(channels):
    metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, channels, 23, 31, generator=g, dtype=torch.float64)
    x_hat = (x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    ours = ssim(x_hat, x)
    for i in range(2):
        ref = metrics.structural_similarity(
            x_hat[i].numpy(),
            x[i].numpy(),
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            channel_axis=0,
        )
        assert ours[i].item() == pytest.approx(ref, abs=1e-10)


def test_ssim_of_identical_images_is_one_and_region_selects_window_centres():
    x = torch.rand(1, 1, 20, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-12)
    x_hat = x.clone()
    x_hat[..., :, :10] = 0.5  # damage the left half only
    right = torch.zeros(20, 30, dtype=torch.bool)
    right[:, 15:] = True  # window centres whose 11x11 window misses the damage
    assert ssim(x_hat, x, region=right).item() == pytest.approx(1.0, abs=1e-12)
    assert ssim(x_hat, x).item() < 0.9


def test_determined_region_of_a_valid_blur_is_the_kernel_interior():
    blur = Blur(torch.ones(3, 4) / 12, padding="valid")
    mask = determined_region(blur, (1, 3, 8, 9))
    # a 3x4 kernel: pixels whose footprint rows i-1..i+1, cols j-2..j+1 lie inside.
    expected = np.zeros((8, 9), dtype=bool)
    expected[1:7, 2:8] = True
    np.testing.assert_array_equal(mask.numpy(), expected)
    # as many pixels as the valid measurement has per channel
    assert int(mask.sum()) == math.prod(blur.output_shape((1, 1, 8, 9))[-2:])
    circular = Blur(torch.ones(3, 3) / 9, padding="circular")
    assert bool(determined_region(circular, (8, 8)).all())
    mask = torch.tensor([[1.0, 0.0], [0.5, 0.0]])
    np.testing.assert_array_equal(
        determined_region(Inpainting(mask), (1, 1, 2, 2)).numpy(), [[True, False], [True, False]]
    )


def test_normalized_adjoint_is_an_average_of_the_measurements():
    blur = Blur(gaussian_kernel(1.0, dtype=torch.float64), padding="valid")
    x = torch.full((1, 2, 12, 12), 0.7, dtype=torch.float64)
    # A constant image comes back, borders included (A^H y / A^H 1 = c), to rounding: at the
    # corners both sums hold only the kernel's smallest taps (~1e-4 of the largest).
    torch.testing.assert_close(normalized_adjoint(blur, blur.A(x)), x, rtol=0, atol=1e-11)
    # Plain A^H y darkens the border: that is what the normalisation undoes.
    assert blur.A_adjoint(blur.A(x))[0, 0, 0, 0] < 0.1
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([[[[0.2, 0.0], [0.4, 0.6]]]], dtype=torch.float64)
    out = normalized_adjoint(Inpainting(mask), y)
    # the unmeasured pixel gets the mean of the measured ones (0.2 + 0.4 + 0.6) / 3
    torch.testing.assert_close(out, torch.tensor([[[[0.2, 0.4], [0.4, 0.6]]]], dtype=torch.float64))


def _dense(op, shape):
    n = math.prod(shape)
    cols = [op(torch.eye(n, dtype=torch.float64)[i].view(shape)).flatten() for i in range(n)]
    return torch.stack(cols, 1)


def test_tikhonov_and_smooth_least_squares_solve_their_normal_equations():
    g = torch.Generator().manual_seed(2)
    blur = Blur(gaussian_kernel(0.8), padding="valid")
    shape = (1, 1, 7, 8)
    y = torch.randn(blur.output_shape(shape), generator=g, dtype=torch.float64)
    a = _dense(blur.A, shape)
    n = a.shape[1]
    x0 = normalized_adjoint(blur, y).flatten()
    lam = 0.3
    expected = torch.linalg.solve(
        a.T @ a + lam * torch.eye(n, dtype=a.dtype), a.T @ y.flatten() + lam * x0
    )
    torch.testing.assert_close(tikhonov(blur, y, lam).flatten(), expected, rtol=0, atol=1e-4)
    # smooth least squares: D the forward differences along rows and columns, no wrap
    d = []
    for i in range(7):
        for j in range(8):
            for di, dj in ((1, 0), (0, 1)):
                if i + di < 7 and j + dj < 8:
                    row = torch.zeros(n, dtype=torch.float64)
                    row[(i + di) * 8 + j + dj], row[i * 8 + j] = 1, -1
                    d.append(row)
    d = torch.stack(d)
    expected = torch.linalg.solve(a.T @ a + lam * d.T @ d, a.T @ y.flatten())
    torch.testing.assert_close(
        smooth_least_squares(blur, y, lam).flatten(), expected, rtol=0, atol=1e-4
    )


def test_fit_baselines_picks_the_weight_that_scores_best_on_validation():
    g = torch.Generator().manual_seed(3)
    blur = Blur(gaussian_kernel(1.5), padding="valid", noise=GaussianNoise(0.2, generator=4))
    x = torch.rand(2, 1, 24, 24, generator=g)
    x = torch.nn.functional.avg_pool2d(x, 5, 1, 2)  # smooth images: regularisation helps
    pairs = [(x, blur(x))]
    grid = (1e-3, 1e-1, 1.0, 10.0)
    (fitted,) = fit_baselines(blur, pairs, kinds=("tikhonov",), grid=grid)

    def score(lam):
        return psnr(Baseline("tikhonov", lam)(blur, pairs[0][1]), x).mean().item()

    # no grid value scores better, and the refinement stays within 7/8 of a decade of the
    # best grid value (1/2 + 1/4 + 1/8)
    best_on_grid = max(grid, key=score)
    assert score(fitted.lam) >= score(best_on_grid)
    assert abs(math.log10(fitted.lam / best_on_grid)) <= 0.875 + 1e-12
    scores = score_methods({"t": lambda y: fitted(blur, y)}, blur, pairs)
    # psnr returns float32 per image; score_methods averages in float64
    assert scores["t"]["psnr"] == pytest.approx(score(fitted.lam), abs=1e-5)
    assert scores["t"]["n"] == 2


# -- arguments: a wrong type is a TypeError, a wrong value a ValueError, each naming it -----


def _calls():
    x = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    blur = Blur(gaussian_kernel(1.0), padding="valid")
    y = blur.A(x)
    scores = {"a": {"psnr": 1.0, "psnr_determined": 1.0, "ssim": 0.5}}
    wrong_types = {
        "x_hat": lambda: psnr(x.numpy(), x),
        "max_val": lambda: ssim(x, x, max_val="1"),
        "region": lambda: psnr(x, x, region=[[True]]),
        "lam": lambda: tikhonov(blur, y, "0.1"),
        "kind": lambda: Baseline(None, 0.1),
        "normalised": lambda: Baseline("initial", None, 1),
        "kinds": lambda: fit_baselines(blur, [(x, y)], kinds="tikhonov"),
        "shape": lambda: determined_region(blur, 12),
    }
    wrong_values = {
        "x_hat": lambda: psnr(x[..., :4], x),
        "max_val": lambda: psnr(x, x, max_val=float("nan")),
        "region": lambda: ssim(x, x, region=torch.zeros(12, 12, dtype=torch.bool)),
        "lam": lambda: smooth_least_squares(blur, y, -1.0),
        "kind": lambda: Baseline("wiener", 0.1),
        "kinds": lambda: fit_baselines(blur, [(x, y)], kinds=("wiener",)),
        "grid": lambda: fit_baselines(blur, [(x, y)], grid=(0.1, 0.0)),
        "validation": lambda: fit_baselines(blur, []),
        "shape": lambda: determined_region(blur, (12,)),
        "best_of": lambda: format_scores(scores, best_of=["b"]),
    }
    return wrong_types, wrong_values


@pytest.mark.parametrize("argument", list(_calls()[0]))
def test_wrong_types_are_type_errors_naming_the_argument(argument):
    with pytest.raises(TypeError, match=rf"^{argument}: expected .*, got "):
        _calls()[0][argument]()


@pytest.mark.parametrize("argument", list(_calls()[1]))
def test_wrong_values_are_value_errors_naming_the_argument(argument):
    with pytest.raises(ValueError, match=rf"^{argument}: expected .*, got ") as caught:
        _calls()[1][argument]()
    assert type(caught.value) is ValueError
