"""Argument checks shared by every layer, with one wording for every refusal.

A wrong *type* raises ``TypeError``, a wrong *value* ``ValueError``; each message starts
with the argument's name, then says what was expected and what came, e.g.
``"layers: expected an integer >= 1, got 0"``. ``bool`` is never accepted where a number
is asked for (``True`` is an ``int`` to Python, but never what the caller meant).
This module imports nothing from the package, so any layer may use it.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

__all__ = [
    "check_bool",
    "check_choice",
    "check_int",
    "check_real",
    "describe",
]


def describe(value: Any) -> str:
    """A short description of a received value for an error message."""
    if isinstance(value, (bool, Integral, Real, str)) or value is None:
        return repr(value)
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"{type(value).__name__} of shape {tuple(shape)} and dtype {value.dtype}"
    return f"a {type(value).__name__}"


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
    if isinstance(value, bool) or not isinstance(value, Integral):
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


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` must be one of the strings in ``choices``."""
    listed = ", ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected one of {listed}, got {describe(value)}")
    if value not in choices:
        raise ValueError(f"{name}: expected one of {listed}, got {value!r}")
    return value


def _range_text(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""
