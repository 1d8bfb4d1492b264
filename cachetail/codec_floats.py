"""Printing a FLOAT: the shortest decimal text that reads back as its float32 value.

Both paths hold the exact float32 (the binlog its 4 bytes, the SELECT a cast to DOUBLE); the
text is the shortest one whose value rounds (to nearest, ties to even) to that float32, the
closest such on a tie (its last digit even), laid out as Python's ``repr`` lays out a double,
so a FLOAT and a DOUBLE look alike: ``0.1``, ``16777216.0``, ``3.4028235e+38``, ``1e-45``.
The rounding interval is computed with exact fractions: converting a decimal to a double
first and then to a float32 would round twice.
"""

from __future__ import annotations

import decimal
import struct
from fractions import Fraction

from cachetail.codec_columns import CodecError


def repr_style(digits: str, decpt: int, negative: bool) -> str:
    """Digits ``d1d2...`` of ``0.d1d2... * 10**decpt`` laid out as Python's ``repr(float)``."""
    sign = "-" if negative else ""
    if decpt <= -4 or decpt > 16:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        exponent = decpt - 1
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if decpt <= 0:
        return f"{sign}0.{'0' * -decpt}{digits}"
    if decpt >= len(digits):
        return f"{sign}{digits}{'0' * (decpt - len(digits))}.0"
    return f"{sign}{digits[:decpt]}.{digits[decpt:]}"


def float32_text(value: float) -> str:
    """The shortest decimal that reads back as the float32 ``value``, laid out like repr()."""
    if value == 0:
        return "0.0"
    bits = struct.unpack("<I", struct.pack("<f", value))[0] & 0x7FFFFFFF
    if _f32(bits) != abs(value):
        raise TypeError(f"{value!r} is not a float32 value")
    low, high, closed = _float32_interval(bits)
    exact = Fraction(abs(value))
    for digits in range(1, 10):
        inside = [d for d in _neighbours(abs(value), digits)
                  if low < Fraction(d) < high or (closed and Fraction(d) in (low, high))]
        if inside:
            best = min(inside, key=lambda d: (abs(Fraction(d) - exact), d.as_tuple().digits[-1] % 2))
            return _layout(best, value < 0)
    raise CodecError(f"no float32 text for {value!r}")  # 9 digits always suffice


def _f32(bits: int) -> float:
    return float(struct.unpack("<f", struct.pack("<I", bits))[0])


def _float32_interval(bits: int) -> tuple[Fraction, Fraction, bool]:
    """The values that round to the positive float32 ``bits``; ends included when its
    significand is even (round half to even)."""
    x = Fraction(_f32(bits))
    below = Fraction(_f32(bits - 1))
    above = Fraction(_f32(bits + 1)) if bits + 1 < 0x7F800000 else x + (x - below)
    return (below + x) / 2, (x + above) / 2, bits % 2 == 0


def _neighbours(value: float, digits: int) -> tuple[decimal.Decimal, decimal.Decimal]:
    exact = decimal.Decimal(value)
    down = decimal.Context(prec=digits, rounding=decimal.ROUND_FLOOR).plus(exact)
    up = decimal.Context(prec=digits, rounding=decimal.ROUND_CEILING).plus(exact)
    return down, up


def _layout(value: decimal.Decimal, negative: bool) -> str:
    _, digit_tuple, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    decpt = len(digit_tuple) + exponent
    return repr_style(digits, decpt, negative)
