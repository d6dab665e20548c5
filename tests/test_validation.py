"""The shared argument checks: a wrong type is a TypeError, a wrong value a ValueError, and
every message reads ``"<name>: expected <what>, got <received>"``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unrolled._validation import (
    check_bool,
    check_choice,
    check_instance,
    check_int,
    check_number_or_tensor,
    check_real,
    check_shape,
    check_tensor,
    describe,
    is_integer,
)


def refused(error, match, call, *args, **kwargs):
    """``call`` raises exactly ``error`` (not a subclass) with a message matching ``match``
    from its start."""
    with pytest.raises(error, match="^" + match) as raised:
        call(*args, **kwargs)
    assert type(raised.value) is error
    return str(raised.value)


def test_describe_shows_small_values_and_summarises_the_rest():
    assert describe(True) == "True"
    assert describe("a") == "'a'"
    assert describe(None) == "None"
    assert describe((1, 2)) == "(1, 2)"
    assert describe(list(range(100))) == "a list"
    assert describe(torch.zeros(2, 3)) == "Tensor of shape (2, 3) and dtype torch.float32"
    assert describe(object()) == "a object"


def test_is_integer_refuses_bools_and_floats():
    assert is_integer(3) and is_integer(np.int64(3)) and is_integer(-1)
    assert not any(is_integer(v) for v in (True, False, 3.0, "3", None, torch.tensor(3)))


def test_check_int():
    assert check_int("n", 3, minimum=1) == 3
    assert check_int("n", np.int32(4)) == 4 and type(check_int("n", np.int32(4))) is int
    assert check_int("n", None, allow_none=True) is None
    refused(ValueError, r"n: expected an integer >= 1, got 0$", check_int, "n", 0, minimum=1)
    refused(
        ValueError,
        r"n: expected an integer in \[1, 3\], got 4$",
        check_int,
        "n",
        4,
        minimum=1,
        maximum=3,
    )
    refused(TypeError, r"n: expected an integer >= 1, got True$", check_int, "n", True, minimum=1)
    refused(TypeError, r"n: expected an integer, got 2.0$", check_int, "n", 2.0)
    refused(
        TypeError, r"n: expected an integer or None, got '2'$", check_int, "n", "2", allow_none=True
    )
    refused(TypeError, r"n: expected an integer, got None$", check_int, "n", None)


def test_check_real():
    assert check_real("t", 1) == 1.0 and check_real("t", np.float32(0.5)) == 0.5
    refused(
        ValueError, r"t: expected a finite number > 0, got 0$", check_real, "t", 0, positive=True
    )
    refused(
        ValueError,
        r"t: expected a finite number >= 0, got nan$",
        check_real,
        "t",
        math.nan,
        minimum=0,
    )
    refused(ValueError, r"t: expected a finite number, got inf$", check_real, "t", math.inf)
    refused(TypeError, r"t: expected a finite number, got False$", check_real, "t", False)
    refused(TypeError, r"t: expected a finite number, got '1'$", check_real, "t", "1")
    refused(
        TypeError, r"t: expected a finite number, got Tensor", check_real, "t", torch.tensor(1.0)
    )


def test_check_bool_and_check_choice():
    assert check_bool("flag", False) is False
    refused(TypeError, r"flag: expected True or False, got 1$", check_bool, "flag", 1)
    assert check_choice("mode", "a", ("a", "b")) == "a"
    refused(
        ValueError,
        r"mode: expected one of 'a', 'b', got 'c'$",
        check_choice,
        "mode",
        "c",
        ("a", "b"),
    )
    refused(
        TypeError,
        r"mode: expected one of 'a', 'b', got None$",
        check_choice,
        "mode",
        None,
        ("a", "b"),
    )


def test_check_instance_and_check_tensor():
    assert check_instance("s", "x", str, "a string") == "x"
    refused(TypeError, r"s: expected a string, got 3$", check_instance, "s", 3, str, "a string")
    t = torch.zeros(2)
    assert check_tensor("x", t) is t
    refused(TypeError, r"x: expected a torch.Tensor, got \[1.0\]$", check_tensor, "x", [1.0])
    refused(
        TypeError, r"x: expected an image, got ndarray", check_tensor, "x", np.zeros(2), "an image"
    )


def test_check_number_or_tensor():
    t = torch.ones(3, dtype=torch.int64)  # its dtype is a value, left to the caller
    assert check_number_or_tensor("g", t) is t
    assert check_number_or_tensor("g", -2.5) == -2.5  # the range too
    assert check_number_or_tensor("g", 1j, complex_allowed=True) == 1j
    refused(
        TypeError, r"g: expected a number or a tensor, got 1j$", check_number_or_tensor, "g", 1j
    )
    refused(
        TypeError, r"g: expected a number or a tensor, got True$", check_number_or_tensor, "g", True
    )
    refused(TypeError, r"g: expected a step, got '1'$", check_number_or_tensor, "g", "1", "a step")


def test_check_shape():
    assert check_shape("s", [3, np.int64(4)], length=2) == (3, 4)
    assert check_shape("s", torch.Size([2, 5, 1])) == (2, 5, 1)
    refused(
        ValueError, r"s: expected 2 integers >= 1, got \(3,\)$", check_shape, "s", (3,), length=2
    )
    refused(
        ValueError,
        r"s: expected 2 integers >= 1, got \(0, 2\)$",
        check_shape,
        "s",
        (0, 2),
        length=2,
    )
    refused(ValueError, r"s: expected integers >= 1, got \(\)$", check_shape, "s", ())
    refused(
        TypeError,
        r"s: expected 2 integers >= 1, got \(2.0, 3\)$",
        check_shape,
        "s",
        (2.0, 3),
        length=2,
    )
    refused(
        TypeError,
        r"s: expected 2 integers >= 1, got \(True, 3\)$",
        check_shape,
        "s",
        (True, 3),
        length=2,
    )
    refused(
        TypeError, r"s: expected \(H, W\), got '8x8'$", check_shape, "s", "8x8", expected="(H, W)"
    )
