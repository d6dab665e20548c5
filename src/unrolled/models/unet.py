"""A small U-Net denoiser with a noise-level input channel."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_int
from ._base import NoiseLevelDenoiser
from ._inputs import kaiming_init

__all__ = ["UNet"]


def _block(cin: int, cout: int, bias: bool) -> nn.Sequential:
    convs = [
        nn.Conv2d(cin, cout, 3, padding=1, bias=bias),
        nn.Conv2d(cout, cout, 3, padding=1, bias=bias),
    ]
    for conv in convs:
        kaiming_init(conv, relu=True)
    return nn.Sequential(convs[0], nn.ReLU(inplace=True), convs[1], nn.ReLU(inplace=True))


class UNet(NoiseLevelDenoiser):
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
        levels: Literal[1, 2, 3, 4, 5, 6] = 2,
        bias: bool = True,
        residual: bool = True,
        *,
        last_init_scale: float = 0.1,
    ):
        check_int("base", base, minimum=1)
        check_int("levels", levels, minimum=1, maximum=6)
        super().__init__(
            in_channels, out_channels, bias=bias, residual=residual, last_init_scale=last_init_scale
        )
        self.base = base
        self.levels = levels

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

    def network(self, t: Tensor) -> Tensor:
        h, w = t.shape[-2:]
        multiple = 2**self.levels
        pad_h, pad_w = -h % multiple, -w % multiple
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
        return self.last(t)[..., :h, :w]

    def extra_repr(self) -> str:
        return f"levels={self.levels}, residual={self.residual}"
