"""Evaluation: metrics (PSNR, SSIM), the region a measurement determines, and the
classical baselines every trained model is reported against."""

from .baselines import (
    BASELINES,
    LAMBDA_GRID,
    Baseline,
    fit_baselines,
    smooth_least_squares,
    tikhonov,
)
from .metrics import mse, psnr, ssim
from .regions import determined_region
from .report import METRICS, format_scores, image_scores, score_methods

__all__ = [
    "BASELINES",
    "LAMBDA_GRID",
    "METRICS",
    "Baseline",
    "determined_region",
    "fit_baselines",
    "format_scores",
    "image_scores",
    "mse",
    "psnr",
    "score_methods",
    "smooth_least_squares",
    "ssim",
    "tikhonov",
]
