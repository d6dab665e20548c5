"""Helpers shared by the datasets: argument checks, per-item seeding, image decoding, crops."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .._validation import check_int, check_shape, is_integer

__all__ = ["center_crop", "item_generator", "load_image", "pair", "random_crop"]


def pair(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    """``value`` as a ``(h, w)`` pair of positive ints; an int ``n`` means ``(n, n)``."""
    expected = "an integer or a pair (h, w) of integers >= 1"
    return check_shape(
        name, (value, value) if is_integer(value) else value, length=2, expected=expected
    )


def check_channels(channels: int, allowed: tuple[int, ...] | None = (1, 3)) -> int:
    """``channels`` checked against ``allowed`` (``None``: any positive int)."""
    if allowed is None:
        return check_int("channels", channels, minimum=1)
    check_int("channels", channels)
    if channels not in allowed:
        raise ValueError(f"channels: expected one of {allowed}, got {channels!r}")
    return int(channels)


def check_index(index: int, length: int) -> int:
    """``index`` in ``range(length)``, negative indices counted from the end like a list."""
    if isinstance(index, torch.Tensor) and index.ndim == 0:
        index = index.item()  # a 0-d integer tensor is an index too
    i = check_int("index", index)
    if i < 0:
        i += length
    if not 0 <= i < length:
        raise IndexError(f"index {index} out of range for a dataset of length {length}")
    return i


def item_generator(*keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` that is a pure function of the non-negative ints ``keys``.

    numpy's ``SeedSequence`` mixes the keys (so ``(seed, i)`` and ``(seed, i + 1)`` give
    unrelated streams, which consecutive ``manual_seed`` values would not guarantee).
    """
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    g = torch.Generator()
    # manual_seed takes a 64-bit value; keep it below 2**63 to stay in its accepted range.
    g.manual_seed((int(state[0]) << 31) ^ int(state[1]))
    return g


_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def load_image(path: str | os.PathLike[str], channels: int) -> torch.Tensor:
    """Decode an image file into a ``(channels, H, W)`` float32 tensor in ``[0, 1]``.

    8-bit images are divided by 255, 16-bit ones (Pillow modes ``I;16*`` and ``I``) by 65535.
    ``channels=1`` converts colour to grey with Pillow's ITU-R 601-2 luma; ``channels=3``
    repeats grey into RGB. Alpha is discarded. Any decoding failure raises an ``OSError``
    naming the file.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            # load() decodes every pixel now, so a truncated file fails here, with its name.
            im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise OSError(f"cannot read image file {str(path)!r}: {_why(path, err)}") from err
    array = _to_array(im, channels, path)
    return torch.from_numpy(array)


def _why(path: Path, err: BaseException) -> str:
    """Pillow's reason, in the user's terms where it is a common one."""
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    if size == 0:
        return "the file is empty (0 bytes)"
    if isinstance(err, UnidentifiedImageError):
        return (
            f"not an image file ({size} bytes whose content is no image format Pillow knows, "
            f"whatever its {path.suffix!r} name says)"
        )
    text = str(err)
    if "truncated" in text.lower() or "broken data stream" in text.lower():
        return f"the file is truncated or damaged ({text})"
    return text


def _to_array(im: Image.Image, channels: int, path: Path) -> np.ndarray:
    if im.mode in _SIXTEEN_BIT_MODES:
        grey = np.asarray(im, dtype=np.float64) / 65535.0
        grey = np.clip(grey, 0.0, 1.0).astype(np.float32)[None]
        return np.repeat(grey, channels, axis=0) if channels == 3 else grey
    if im.mode == "F":
        raise ValueError(
            f"image file {str(path)!r} holds 32-bit floats (Pillow mode 'F'), which have no "
            "fixed range to map to [0, 1]; convert it to 8 or 16 bits"
        )
    im = im.convert("L" if channels == 1 else "RGB")
    array = np.asarray(im, dtype=np.float32) / 255.0
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return np.ascontiguousarray(array)


def _check_fits(image: torch.Tensor, size: tuple[int, int], source: str) -> None:
    h, w = image.shape[-2:]
    if h < size[0] or w < size[1]:
        raise ValueError(
            f"image {source} is {h}x{w} (HxW), smaller than the crop {size[0]}x{size[1]}"
        )


def random_crop(
    image: torch.Tensor, size: tuple[int, int], generator: torch.Generator, source: str
) -> torch.Tensor:
    """A uniformly placed ``size`` window of ``image`` ``(C, H, W)``; ``source`` names it in
    errors."""
    _check_fits(image, size, source)
    h, w = image.shape[-2:]
    top = int(torch.randint(h - size[0] + 1, (1,), generator=generator))
    left = int(torch.randint(w - size[1] + 1, (1,), generator=generator))
    return image[..., top : top + size[0], left : left + size[1]]


def center_crop(image: torch.Tensor, size: tuple[int, int], source: str) -> torch.Tensor:
    """The centred ``size`` window of ``image`` ``(C, H, W)`` (offsets rounded down)."""
    _check_fits(image, size, source)
    h, w = image.shape[-2:]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return image[..., top : top + size[0], left : left + size[1]]
