"""Shared checks of the operators in this package: masks, complex data, closed forms."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._validation import check_tensor

MASK_SHAPES = "(W,), (H, W), (C, H, W) or (B, C, H, W)"


def check_mask_tensor(mask, name: str = "mask", *, allow_complex: bool = True) -> Tensor:
    """``mask`` as a floating (or complex) tensor of 1 to 4 dims; a bool mask becomes 0/1."""
    check_tensor(name, mask, f"a tensor of shape {MASK_SHAPES}")
    if mask.dtype == torch.bool:
        mask = mask.to(torch.get_default_dtype())
    if mask.is_complex() and not allow_complex:
        raise ValueError(f"{name}: expected a real tensor, got dtype {mask.dtype}")
    if not (mask.is_floating_point() or mask.is_complex()):
        raise ValueError(f"{name}: expected a floating or bool tensor, got dtype {mask.dtype}")
    if not 1 <= mask.ndim <= 4:
        raise ValueError(f"{name}: expected shape {MASK_SHAPES}, got {tuple(mask.shape)}")
    return mask


def keep_tensor(module: nn.Module, name: str, tensor: Tensor) -> None:
    """An ``nn.Parameter`` is trained with the module; any other tensor (also one made by a
    network, which then receives its gradient) is held as a buffer."""
    if isinstance(tensor, nn.Parameter):
        setattr(module, name, tensor)
    else:
        module.register_buffer(name, tensor)


def mask_for(
    mask: Tensor, shape: Sequence[int], dtype: torch.dtype, name: str, what: str
) -> Tensor:
    """``mask`` viewed as ``(Bm, Cm, H, W)`` for data of ``shape`` ``(B, C, H, W)``.

    ``Bm`` must be 1 or ``B`` and ``Cm`` 1 or ``C``; a real mask is cast to the real
    dtype of the data (differentiably), a complex one to ``dtype``.
    """
    b, c, h, w = shape
    m = mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape))
    if mask.ndim == 1:  # a pattern of lines (columns), the same on every row
        m = m.expand(1, 1, h, mask.shape[0]) if mask.shape[0] == w else m
    ok = m.shape[0] in (1, b) and m.shape[1] in (1, c) and tuple(m.shape[2:]) == (h, w)
    if not ok:
        raise ValueError(
            f"{name}: expected shape {MASK_SHAPES} broadcasting to {what} of shape "
            f"{tuple(shape)} (batch 1 or {b}, channels 1 or {c}, spatial {(h, w)}), "
            f"got {tuple(mask.shape)}"
        )
    if m.is_complex():
        return m.to(dtype) if dtype.is_complex else m
    return m.to(dtype.to_real() if dtype.is_complex else dtype)


def check_image(x, name: str, *, complex_required: bool = False) -> Tensor:
    """``x`` must be a ``(B, C, H, W)`` tensor (complex when required)."""
    check_tensor(name, x, "a tensor of shape (B, C, H, W)")
    if x.ndim != 4:
        raise ValueError(f"{name}: expected a tensor of shape (B, C, H, W), got {tuple(x.shape)}")
    if complex_required and not x.is_complex():
        raise ValueError(f"{name}: expected a complex tensor, got dtype {x.dtype}")
    return x


def constant_over(gamma: Tensor, dims: int) -> bool:
    """Whether ``gamma`` is constant over the last ``dims`` dimensions (size 1 there)."""
    return all(s == 1 for s in gamma.shape[-dims:]) if gamma.ndim else True


def real_part_like(h: Tensor, z: Tensor) -> Tensor:
    """The real part when the data ``z`` is real (the imaginary part is rounding)."""
    return h if z.is_complex() else h.real
