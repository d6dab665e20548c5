"""DnCNN: a plain deep CNN denoiser with a noise-level input channel."""

from __future__ import annotations

from torch import Tensor, nn

from .._validation import check_int
from ._base import NoiseLevelDenoiser
from ._inputs import kaiming_init

__all__ = ["DnCNN"]


class DnCNN(NoiseLevelDenoiser):
    """A DnCNN denoiser ``D(x, sigma)`` for real images ``(B, C, H, W)``.

    Layers: ``conv3x3 + ReLU``, ``(depth - 2) x [conv3x3 + ReLU]``, ``conv3x3``; no batch
    normalisation (it would couple the samples of a batch and behave differently in
    training and evaluation). The noise level ``sigma`` enters as one extra constant
    input channel, so the first convolution has ``in_channels + 1`` inputs and a
    trainable ``sigma`` changes the output and receives a gradient.

    ``residual=True``: ``D(x, sigma) = x - net([x, sigma])`` (the network predicts the
    noise); otherwise ``D(x, sigma) = net([x, sigma])``.

    Initialisation: He-normal (fan-in) weights for the convolutions followed by a ReLU,
    zero biases, and He-normal weights with linear gain times ``last_init_scale``
    (default 0.1) for the last convolution. A small last layer starts a residual
    DnCNN near the identity, as an unrolled network wants, while (unlike an all-zero
    layer) every weight and ``sigma`` get a gradient from the first step.

    Args:
        in_channels: image channels ``C``.
        out_channels: output channels (must equal ``in_channels`` when ``residual``).
        depth: number of convolutions, at least 2.
        features: channels of the hidden layers.
        bias: convolutions with a bias.
        residual: predict the noise and subtract it.
        last_init_scale: scale of the last layer's initial weights (``>= 0``).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        depth: int = 17,
        features: int = 64,
        bias: bool = True,
        residual: bool = True,
        *,
        last_init_scale: float = 0.1,
    ):
        check_int("depth", depth, minimum=2)
        check_int("features", features, minimum=1)
        super().__init__(
            in_channels, out_channels, bias=bias, residual=residual, last_init_scale=last_init_scale
        )

        layers: list[nn.Module] = []
        channels = in_channels + 1
        for _ in range(depth - 1):
            conv = nn.Conv2d(channels, features, 3, padding=1, bias=bias)
            kaiming_init(conv, relu=True)
            layers += [conv, nn.ReLU(inplace=True)]
            channels = features
        last = nn.Conv2d(channels, out_channels, 3, padding=1, bias=bias)
        kaiming_init(last, relu=False, scale=last_init_scale)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def network(self, t: Tensor) -> Tensor:
        return self.net(t)

    def extra_repr(self) -> str:
        return f"residual={self.residual}"
