"""A small U-Net denoiser with a noise-level input channel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._inputs import check_image, kaiming_init, with_noise_level

__all__ = ["UNet"]


def _block(cin: int, cout: int, bias: bool) -> nn.Sequential:
    convs = [
        nn.Conv2d(cin, cout, 3, padding=1, bias=bias),
        nn.Conv2d(cout, cout, 3, padding=1, bias=bias),
    ]
    for conv in convs:
        kaiming_init(conv, relu=True)
    return nn.Sequential(convs[0], nn.ReLU(inplace=True), convs[1], nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A U-Net denoiser ``D(x, sigma)`` for real images ``(B, C, H, W)`` of any size.

    ``levels`` times: two ``conv3x3 + ReLU`` then 2x2 average pooling, with
    ``base * 2^l`` channels at level ``l``; a bottleneck block; on the way up a 2x2
    transposed convolution, concatenation with the skip connection and two
    ``conv3x3 + ReLU``; a final ``conv1x1``. The noise level is one extra constant input
    channel (as in :class:`DnCNN`). Images whose sides are not multiples of
    ``2^levels`` are padded (edge replication, bottom and right) and the output is
    cropped back, so any ``H, W >= 1`` works.

    ``residual=True``: ``D(x, sigma) = x - net([x, sigma])``. Initialisation as in
    :class:`DnCNN` (He-normal, zero biases, last layer scaled by ``last_init_scale``).

    Args:
        in_channels, out_channels: image channels in and out.
        base: channels at the finest level.
        levels: number of 2x downsamplings (1 to 6).
        bias: convolutions with a bias.
        residual: predict the noise and subtract it.
        last_init_scale: scale of the last layer's initial weights (``>= 0``).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        base: int = 32,
        levels: int = 2,
        bias: bool = True,
        residual: bool = True,
        *,
        last_init_scale: float = 0.1,
    ):
        super().__init__()
        for name, value, low, high in (
            ("in_channels", in_channels, 1, None),
            ("out_channels", out_channels, 1, None),
            ("base", base, 1, None),
            ("levels", levels, 1, 6),
        ):
            ok = not isinstance(value, bool) and isinstance(value, int) and value >= low
            if not ok or (high is not None and value > high):
                span = f"in [{low}, {high}]" if high is not None else f">= {low}"
                raise ValueError(f"{name}: expected an integer {span}, got {value!r}")
        if residual and in_channels != out_channels:
            raise ValueError(
                f"out_channels: residual=True needs out_channels == in_channels "
                f"({in_channels}), got {out_channels}"
            )
        if not (isinstance(last_init_scale, (int, float)) and last_init_scale >= 0):
            raise ValueError(f"last_init_scale: expected a number >= 0, got {last_init_scale!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.base = base
        self.levels = levels
        self.residual = residual

        widths = [base * 2**level for level in range(levels + 1)]
        self.down = nn.ModuleList()
        cin = in_channels + 1
        for level in range(levels):
            self.down.append(_block(cin, widths[level], bias))
            cin = widths[level]
        self.bottleneck = _block(cin, widths[levels], bias)
        self.upsample = nn.ModuleList()
        self.up = nn.ModuleList()
        for level in reversed(range(levels)):
            transposed = nn.ConvTranspose2d(
                widths[level + 1], widths[level], 2, stride=2, bias=bias
            )
            # No ReLU follows it directly, but the next block's input is a mix of it and the
            # (post-ReLU) skip: linear gain keeps its scale like the skip's.
            kaiming_init(transposed, relu=False)
            self.upsample.append(transposed)
            self.up.append(_block(2 * widths[level], widths[level], bias))
        self.last = nn.Conv2d(widths[0], out_channels, 1, bias=bias)
        kaiming_init(self.last, relu=False, scale=last_init_scale)

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """Denoise ``x`` ``(B, C, H, W)`` at noise level ``sigma`` (a number, a 0-d or a
        ``(B,)`` tensor). Returns ``(B, out_channels, H, W)``."""
        check_image(x, self.in_channels, "UNet", self.last.weight.dtype)
        h, w = x.shape[-2:]
        multiple = 2**self.levels
        pad_h, pad_w = -h % multiple, -w % multiple
        t = with_noise_level(x, sigma)
        if pad_h or pad_w:
            t = F.pad(t, (0, pad_w, 0, pad_h), mode="replicate")
        skips = []
        for block in self.down:
            t = block(t)
            skips.append(t)
            t = F.avg_pool2d(t, 2)
        t = self.bottleneck(t)
        for upsample, block in zip(self.upsample, self.up, strict=True):
            t = block(torch.cat([upsample(t), skips.pop()], dim=1))
        out = self.last(t)[..., :h, :w]
        return x - out if self.residual else out

    def extra_repr(self) -> str:
        return f"levels={self.levels}, residual={self.residual}"
