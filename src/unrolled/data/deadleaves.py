"""``DeadLeaves``: procedural natural-like images made of occluding random discs."""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from .._validation import check_int, check_real
from ._common import check_channels, check_index, item_generator, pair

__all__ = ["DeadLeaves", "paint_discs", "power_law_radii"]


def power_law_radii(n: int, rmin: float, rmax: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` float64 radii with density ``p(r) = c r^-3`` on ``[rmin, rmax]``.

    Inverse-CDF sampling: under this law ``r^-2`` is uniform on ``[rmax^-2, rmin^-2]``.
    """
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    a, b = rmin**-2, rmax**-2
    return (a - u * (a - b)).rsqrt()


_NOBODY = torch.iinfo(torch.int64).max


def _cover(
    owner: torch.Tensor,
    size: tuple[int, int],
    first: int,
    r: torch.Tensor,
    cy: torch.Tensor,
    cx: torch.Tensor,
) -> None:
    """Write into ``owner`` (flat ``H*W``, int64) the smallest index ``first + k`` of the discs
    ``k`` covering each pixel centre ``(i + 0.5, j + 0.5)``, keeping smaller indices already
    there. Disc ``k`` covers the points within ``r[k]`` of ``(cy[k], cx[k])``."""
    if r.numel() == 0:
        return
    h, w = size
    index = torch.arange(first, first + r.numel())
    # Discs are grouped by radius octave and each group is tested on a square window around
    # its centres just big enough for its largest disc: under the r^-3 law a group is 4x
    # rarer for each doubling of its window's side, so every octave costs about the same and
    # the many tiny discs are cheap.
    octave = torch.log2(r / r.min()).floor().long()
    for k in octave.unique().tolist():
        sel = octave == k
        rk, yk, xk, ik = r[sel], cy[sel], cx[sel], index[sel]
        # Pixel i is covered only if |i + 0.5 - c| <= r, i.e. i in [c - 0.5 - r, c - 0.5 + r]:
        # within ceil(r) of floor(c - 0.5) on either side.
        half = math.ceil(float(rk.max()))
        d = torch.arange(-half, half + 1)
        iy = (yk - 0.5).floor().long()[:, None] + d
        ix = (xk - 0.5).floor().long()[:, None] + d
        dy2 = (iy.double() + 0.5 - yk[:, None]) ** 2
        dx2 = (ix.double() + 0.5 - xk[:, None]) ** 2
        # Rows/columns off the image get an infinite distance, hence are never inside.
        dy2[(iy < 0) | (iy >= h)] = math.inf
        dx2[(ix < 0) | (ix >= w)] = math.inf
        inside = dy2[:, :, None] + dx2[:, None, :] <= (rk**2)[:, None, None]
        # Pixels outside a disc still get a scatter, of the neutral value _NOBODY, so no
        # data-dependent compaction (nonzero) is needed.
        value = torch.where(inside, ik[:, None, None], _NOBODY)
        flat = (iy.clamp(0, h - 1) * w)[:, :, None] + ix.clamp(0, w - 1)[:, None, :]
        owner.scatter_reduce_(0, flat.reshape(-1), value.reshape(-1), reduce="amin")


def paint_discs(
    size: int | tuple[int, int],
    radii: torch.Tensor,
    centres: torch.Tensor,
    colours: torch.Tensor,
    background: torch.Tensor | None = None,
) -> torch.Tensor:
    """Paint opaque discs, the first one in front, into a ``(C, H, W)`` image.

    ``radii`` ``(N,)`` and ``centres`` ``(N, 2)`` (rows ``(y, x)``) are in pixels, with pixel
    ``(i, j)`` centred at ``(i + 0.5, j + 0.5)``; a pixel takes the colour (``colours``
    ``(N, C)``) of the first disc whose closed disc contains its centre, else ``background``
    ``(C,)`` (default zeros).
    """
    h, w = pair(size, "size")
    radii = torch.as_tensor(radii, dtype=torch.float64)
    centres = torch.as_tensor(centres, dtype=torch.float64)
    colours = torch.as_tensor(colours)
    n = radii.shape[0] if radii.ndim == 1 else -1
    if radii.ndim != 1 or (radii.numel() and not bool((radii > 0).all())):
        raise ValueError(f"radii must be a 1-D tensor of positive radii, got shape {radii.shape}")
    if centres.shape != (n, 2):
        raise ValueError(f"centres must have shape ({n}, 2), got {tuple(centres.shape)}")
    if colours.ndim != 2 or colours.shape[0] != n:
        raise ValueError(f"colours must have shape ({n}, C), got {tuple(colours.shape)}")
    c = colours.shape[1]
    if background is None:
        background = torch.zeros(c, dtype=colours.dtype)
    background = torch.as_tensor(background, dtype=colours.dtype)
    if background.shape != (c,):
        raise ValueError(f"background must have shape ({c},), got {tuple(background.shape)}")
    owner = torch.full((h * w,), _NOBODY, dtype=torch.int64)
    _cover(owner, (h, w), 0, radii, centres[:, 0], centres[:, 1])
    owner[owner == _NOBODY] = n
    palette = torch.cat([colours, background[None]])
    return palette[owner].T.reshape(c, h, w).contiguous()


class DeadLeaves(Dataset):
    """Dead-leaves images: ``(channels, H, W)`` float32 tensors in ``[0, 1]``, computed on the
    fly.

    Each image is a stack of opaque discs seen from above. Disc radii follow the power law
    ``p(r) ~ r^-3`` on ``[rmin, rmax]`` (the scale-invariant choice, which gives the ``1/f^2``
    power spectrum of natural images); centres are uniform on the image grown by ``rmax`` on
    every side, so borders look like the interior; colours are uniform in ``[0, 1]^channels``
    (grey when ``channels=1``).

    Discs are drawn front to back and each pixel keeps the first disc that covers it, which is
    exactly the dead-leaves law; drawing stops once every pixel is covered, or after
    ``max_discs`` discs, when any still-uncovered pixel gets one last random colour.

    Image ``i`` is a pure function of ``(seed, i)``: nothing is stored and any item can be
    regenerated anywhere. ``size``: int or ``(H, W)``. ``rmin``/``rmax`` in pixels; defaults
    ``max(1, min(H, W) / 64)`` and ``max(min(H, W) / 2, rmin)``.
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        channels: int = 3,
        length: int = 1000,
        seed: int = 0,
        *,
        rmin: float | None = None,
        rmax: float | None = None,
        max_discs: int = 100_000,
    ) -> None:
        self.size = pair(size, "size")
        self.channels = check_channels(channels, allowed=None)
        self.length = check_int("length", length, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        short = min(self.size)
        # Radii in pixels; the defaults follow the image size.
        rmin = check_real("rmin", rmin, positive=True, allow_none=True)
        self.rmin = max(1.0, short / 64) if rmin is None else rmin
        rmax = check_real("rmax", rmax, minimum=self.rmin, allow_none=True)
        self.rmax = max(short / 2, self.rmin) if rmax is None else rmax
        self.max_discs = check_int("max_discs", max_discs, minimum=1)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        i = check_index(index, self.length)
        return self.render(item_generator(self.seed, i))

    def _discs(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Radii and centres ``(y, x)`` of the discs, among ``n`` candidates, that can reach
        the image.

        Of the discs with ``p(r) ~ r^-3`` and centres uniform on the image grown by ``rmax``,
        only those centred in the image grown by their own ``r`` can touch it; keeping a
        candidate with probability ``|B_r| / |B_rmax|`` (``B_r``: the image grown by ``r``),
        then placing it uniformly in ``B_r``, draws exactly those, in the same order.
        """
        h, w = self.size
        r = power_law_radii(n, self.rmin, self.rmax, g)
        area = (h + 2 * r) * (w + 2 * r) / ((h + 2 * self.rmax) * (w + 2 * self.rmax))
        r = r[torch.rand(n, generator=g, dtype=torch.float64) < area]
        cy = torch.rand(r.numel(), generator=g, dtype=torch.float64) * (h + 2 * r) - r
        cx = torch.rand(r.numel(), generator=g, dtype=torch.float64) * (w + 2 * r) - r
        return r, cy, cx

    def _first_batch(self) -> int:
        """Candidate discs to draw first: enough to cover every pixel with high probability.

        A disc of radius ``r`` centred uniformly in ``B_r`` covers a given pixel with
        probability ``pi r^2 / |B_r|`` (Fubini), so an accepted disc does with probability
        ``q = pi E[r^2] / E|B_r|`` (moments under ``p(r)``), and after ``N`` of them about
        ``H W exp(-N q)`` pixels are left: ``N = (ln(H W) + 1) / q`` leaves about a third of a
        pixel on average (large discs make the count vary, and about one 64x64 image in four
        needs a second batch). A fraction ``E|B_r| / |B_rmax|`` of the candidates is
        accepted.
        """
        h, w = self.size
        a, b = self.rmin**-2, self.rmax**-2
        if a > b:
            c = 2.0 / (a - b)  # normalises p(r) = c r^-3 on [rmin, rmax]
            er = c * (1 / self.rmin - 1 / self.rmax)
            er2 = c * math.log(self.rmax / self.rmin)
        else:  # rmin == rmax: every disc has that radius
            er, er2 = self.rmin, self.rmin**2
        eb = h * w + 2 * (h + w) * er + 4 * er2
        accepted = (math.log(h * w) + 1) / (math.pi * er2 / eb)
        return max(64, math.ceil(accepted * (h + 2 * self.rmax) * (w + 2 * self.rmax) / eb))

    def render(self, generator: torch.Generator) -> torch.Tensor:
        """One image drawn with ``generator`` (a CPU ``torch.Generator``)."""
        h, w = self.size
        c = self.channels
        owner = torch.full((h * w,), _NOBODY, dtype=torch.int64)
        colours = []
        drawn, batch = 0, self._first_batch()
        # Discs come front to back, in batches sized to cover the image in one go, until every
        # pixel has an owner; a batch's discs are numbered after the previous batch's.
        while drawn < self.max_discs:
            r, cy, cx = self._discs(batch, generator)
            r, cy, cx = (
                r[: self.max_discs - drawn],
                cy[: self.max_discs - drawn],
                cx[: self.max_discs - drawn],
            )
            colours.append(torch.rand(r.numel(), c, generator=generator))
            _cover(owner, self.size, drawn, r, cy, cx)
            drawn += r.numel()
            if not (owner == _NOBODY).any():
                break
        palette = torch.cat([*colours, torch.rand(1, c, generator=generator)])
        owner[owner == _NOBODY] = palette.shape[0] - 1  # leftover pixels: one background colour
        return palette[owner].T.reshape(c, h, w).contiguous()

    def __repr__(self) -> str:
        return (
            f"DeadLeaves(size={self.size}, channels={self.channels}, length={self.length}, "
            f"seed={self.seed}, rmin={self.rmin}, rmax={self.rmax})"
        )
