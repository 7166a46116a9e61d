"""Exact decimal text: validation and ordering keys.

The book stores prices and quantities as the text the exchange sent.  To order price
levels it needs a numeric key, and the key must be exact:

- a *short* plain decimal (no exponent, at most 15 significant digits, at most 40
  characters) gets a float key: every such decimal maps to a distinct double and the
  mapping is monotone, so floats order and identify these prices exactly among
  themselves;
- anything else gets a :class:`~decimal.Decimal` key built from the text (the
  constructor never rounds).

A float key and a Decimal key must never be compared with each other (a float is a
binary fraction, not the decimal it came from): a book side switches all its keys to
Decimal as soon as one price needs it (see :mod:`shared.book`).

Values beyond ``LIMIT`` in magnitude are treated as invalid: no exchange quotes them, and
they are what corrupted input looks like.  Nothing here turns a float back into a price a
user sees.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

# Classification of a quantity.
ZERO = 0
POSITIVE = 1
INVALID = 2

LIMIT = Decimal("1e30")
_FLOAT_LIMIT = 1e30
_PLAIN = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)\Z")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,6})?\Z")
_MAX_TEXT = 400


def exact_decimal(value: Any) -> Decimal | None:
    """The exact Decimal of a decimal text or JSON number, or None when it is not a finite
    decimal within ``LIMIT``."""
    if type(value) is str:
        if len(value) > _MAX_TEXT or not _DECIMAL.match(value):
            return None
        d = Decimal(value)
    elif type(value) is float:
        if value != value or value in (float("inf"), float("-inf")):
            return None
        d = Decimal(repr(value))
    elif type(value) is int:
        d = Decimal(value)
    elif type(value) is Decimal:
        d = value
    else:
        return None  # bool, None, containers
    if not d.is_finite() or abs(d) >= LIMIT:
        return None
    return d


def _significant(text: str) -> int:
    digits = text.lstrip("+-").replace(".", "").lstrip("0")
    if "." in text:
        digits = digits.rstrip("0")
    return len(digits)


def order_key(value: Any) -> float | Decimal | None:
    """Exact ordering key (see the module text), or None when not a finite decimal in range."""
    t = type(value)
    if t is str:
        if len(value) <= 40 and _PLAIN.match(value) and _significant(value) <= 15:
            f = float(value)
            return f if abs(f) < _FLOAT_LIMIT else None
        return exact_decimal(value)
    if t is float:
        if value != value or not -_FLOAT_LIMIT < value < _FLOAT_LIMIT:
            return None
        return value
    if t is int:
        if -(2**53) < value < 2**53:
            return float(value)
        return exact_decimal(value)
    if t is Decimal:
        return exact_decimal(value)
    return None


def classify_qty(value: Any) -> int:
    """ZERO, POSITIVE or INVALID (negative, not a finite decimal, out of range, wrong type)."""
    key = order_key(value)
    if key is None or key < 0:
        return INVALID
    return ZERO if key == 0 else POSITIVE


def is_valid_price(value: Any) -> bool:
    key = order_key(value)
    return key is not None and key > 0


def as_text(value: Any) -> str:
    """The text of a value as the exchange wrote it (strings pass; JSON numbers use repr)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    return str(value)


def to_decimal(value: Any) -> Decimal:
    """Exact Decimal of a validated value (raises ValueError otherwise)."""
    d = exact_decimal(value)
    if d is None:
        raise ValueError(f"not a finite decimal: {value!r}")
    return d


__all__ = [
    "INVALID",
    "LIMIT",
    "POSITIVE",
    "ZERO",
    "InvalidOperation",
    "as_text",
    "classify_qty",
    "exact_decimal",
    "is_valid_price",
    "order_key",
    "to_decimal",
]
