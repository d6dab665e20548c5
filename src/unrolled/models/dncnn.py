"""DnCNN: a plain deep CNN denoiser with a noise-level input channel."""

from __future__ import annotations

from torch import Tensor, nn

from ._inputs import check_image, kaiming_init, with_noise_level

__all__ = ["DnCNN"]


class DnCNN(nn.Module):
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
        super().__init__()
        for name, value, low in (
            ("in_channels", in_channels, 1),
            ("out_channels", out_channels, 1),
            ("depth", depth, 2),
            ("features", features, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
        if residual and in_channels != out_channels:
            raise ValueError(
                f"out_channels: residual=True needs out_channels == in_channels "
                f"({in_channels}), got {out_channels}"
            )
        if not (isinstance(last_init_scale, (int, float)) and last_init_scale >= 0):
            raise ValueError(f"last_init_scale: expected a number >= 0, got {last_init_scale!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.residual = residual

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

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """Denoise ``x`` ``(B, C, H, W)`` at noise level ``sigma``: a number, a 0-d
        tensor or a ``(B,)`` tensor. Returns ``(B, out_channels, H, W)``."""
        check_image(x, self.in_channels, "DnCNN", self.net[-1].weight.dtype)
        out = self.net(with_noise_level(x, sigma))
        return x - out if self.residual else out

    def extra_repr(self) -> str:
        return f"residual={self.residual}"
