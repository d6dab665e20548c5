"""The training loss and PSNR, as the trainer uses them (defined in
:mod:`unrolled.evaluation.metrics`, with SSIM and the determined region)."""

from ..evaluation.metrics import mse, psnr

__all__ = ["mse", "psnr"]
