"""Exact decimal text: validation and ordering keys.

The book stores prices and quantities as the text the exchange sent.  To order price
levels it needs a numeric key; :func:`order_key` gives one that is *exact*: a Python
float for text of at most 15 characters (any decimal with at most 15 significant digits
maps to a distinct double, and the mapping is monotone, so equal keys mean equal prices)
and a :class:`~decimal.Decimal` beyond that.  Python compares and hashes floats and
Decimals exactly across the two types, so mixed keys order correctly.

Nothing here ever turns a float back into a price a user sees.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

# Classification of a quantity text.
ZERO = 0
POSITIVE = 1
INVALID = 2

_INF = float("inf")
_SHORT = 15
_ALLOWED = frozenset("0123456789.-+eE")


def order_key(text: Any) -> float | Decimal | None:
    """Exact numeric key of a decimal text, or None when it is not a finite decimal.

    JSON numbers that a decoder turned into float or int (FTX, Kraken v2 without
    Decimal parsing) are accepted as they are: their text is their repr.
    """
    if isinstance(text, str):
        if not text or not _ALLOWED.issuperset(text):
            return None
        try:
            value: float | Decimal = float(text) if len(text) <= _SHORT else Decimal(text)
        except (ValueError, InvalidOperation):
            return None
        if isinstance(value, Decimal):
            if not value.is_finite():
                return None
            # A long text that still has few significant digits gets the float key, so
            # "7.61" and "7.610000000000000000" land on the same level.
            if len(value.normalize().as_tuple().digits) <= _SHORT:
                return float(value)
            return value
        if value != value or value in (_INF, -_INF):
            return None
        return value
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text if abs(text) < 10**30 else Decimal(text)
    if isinstance(text, float):
        if text != text or text in (_INF, -_INF):
            return None
        return text
    if isinstance(text, Decimal):
        return text if text.is_finite() else None
    return None


def classify_qty(text: Any) -> int:
    """ZERO, POSITIVE or INVALID (negative, not a finite decimal, wrong type)."""
    key = order_key(text)
    if key is None or key < 0:
        return INVALID
    return ZERO if key == 0 else POSITIVE


def is_valid_price(text: Any) -> bool:
    key = order_key(text)
    return key is not None and key > 0


def as_text(value: Any) -> str:
    """The text of a value as the exchange wrote it (strings pass; JSON numbers use repr)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def to_decimal(text: Any) -> Decimal:
    """Exact Decimal of a validated decimal text (raises on invalid text)."""
    if isinstance(text, float):
        return Decimal(repr(text))
    return Decimal(str(text))
