"""Argument checks shared by every layer, with one wording for every refusal.

A wrong *type* raises ``TypeError``, a wrong *value* ``ValueError``; each message starts
with the argument's name, then says what was expected and what came, e.g.
``"layers: expected an integer >= 1, got 0"``. ``bool`` is never accepted where a number
is asked for (``True`` is an ``int`` to Python, but never what the caller meant).
This module imports nothing from the package (only torch), so any layer may use it.
"""

from __future__ import annotations

import math
from numbers import Integral, Number, Real
from typing import Any

import torch

__all__ = [
    "check_bool",
    "check_choice",
    "check_instance",
    "check_int",
    "check_number_or_tensor",
    "check_real",
    "check_shape",
    "check_tensor",
    "describe",
    "is_integer",
]


def describe(value: Any) -> str:
    """A short description of a received value for an error message."""
    if isinstance(value, (bool, Number, str)) or value is None:
        return repr(value)
    if isinstance(value, (tuple, list)) and len(text := repr(value)) <= 60:
        return text
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"{type(value).__name__} of shape {tuple(shape)} and dtype {value.dtype}"
    return f"a {type(value).__name__}"


def is_integer(value: Any) -> bool:
    """Whether ``value`` is an integer and not a bool (for arguments that take an integer
    or something else, e.g. a seed or a generator)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_bool(name: str, value: Any) -> bool:
    """``value`` must be ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {describe(value)}")
    return value


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """``value`` must be an integer (not a bool) within ``[minimum, maximum]``."""
    if value is None and allow_none:
        return None
    expected = "an integer" + _range_text(minimum, maximum) + (" or None" if allow_none else "")
    if not is_integer(value):
        raise TypeError(f"{name}: expected {expected}, got {describe(value)}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return int(value)


def check_real(
    name: str,
    value: Any,
    *,
    positive: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    allow_none: bool = False,
) -> float | None:
    """``value`` must be a finite real number (not a bool), > 0 if ``positive``."""
    if value is None and allow_none:
        return None
    bounds = " > 0" if positive else _range_text(minimum, maximum)
    expected = "a finite number" + bounds + (" or None" if allow_none else "")
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name}: expected {expected}, got {describe(value)}")
    number = float(value)
    out_of_range = (
        not math.isfinite(number)
        or (positive and number <= 0)
        or (minimum is not None and number < minimum)
        or (maximum is not None and number > maximum)
    )
    if out_of_range:
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return number


def check_shape(
    name: str, value: Any, *, length: int | None = None, expected: str | None = None
) -> tuple[int, ...]:
    """``value`` must be a tuple, list or ``torch.Size`` of integers (not bools) >= 1, of
    ``length`` entries when given; returned as a tuple of ints."""
    if expected is None:
        expected = f"{length} integers >= 1" if length is not None else "integers >= 1"
    sides = isinstance(value, (tuple, list)) and all(is_integer(s) for s in value)
    if not sides:
        raise TypeError(f"{name}: expected {expected}, got {describe(value)}")
    if not value or (length is not None and len(value) != length) or min(value) < 1:
        raise ValueError(f"{name}: expected {expected}, got {tuple(value)!r}")
    return tuple(int(s) for s in value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` must be one of the strings in ``choices``."""
    listed = ", ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected one of {listed}, got {describe(value)}")
    if value not in choices:
        raise ValueError(f"{name}: expected one of {listed}, got {value!r}")
    return value


def check_instance(name: str, value: Any, types: type | tuple[type, ...], expected: str) -> Any:
    """``value`` must be an instance of ``types``; ``expected`` says so in words."""
    if not isinstance(value, types):
        raise TypeError(f"{name}: expected {expected}, got {describe(value)}")
    return value


def check_tensor(name: str, value: Any, expected: str = "a torch.Tensor") -> Any:
    """``value`` must be a ``torch.Tensor``; its dtype and shape are values, checked by the
    caller (a wrong one is a ``ValueError``)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected {expected}, got {describe(value)}")
    return value


def check_number_or_tensor(
    name: str,
    value: Any,
    expected: str = "a number or a tensor",
    *,
    complex_allowed: bool = False,
) -> Any:
    """``value`` must be a real number (not a bool), a complex one if ``complex_allowed``,
    or a ``torch.Tensor``; its range, dtype and shape are values, checked by the caller."""
    if isinstance(value, torch.Tensor):
        return value
    numbers = Number if complex_allowed else Real
    if isinstance(value, bool) or not isinstance(value, numbers):
        raise TypeError(f"{name}: expected {expected}, got {describe(value)}")
    return value


def _range_text(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""
