"""Field and shape checks the venue modules share.

Each raises what the venue modules raised before they shared it (``ValueError`` for a
wrong integer, side or row list, ``TypeError`` for a wrong object, level list or text),
with the same message, so a malformed message fails as it did.

Not a venue: the venue discovery in :mod:`shared.exchanges` skips ``_`` modules.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from shared.formats.timestamps import iso_to_us


def is_int(value: Any) -> bool:
    """A JSON integer (``True``/``False`` are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def integer(value: Any, what: str) -> int:
    """``value`` when it is a JSON integer; else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} is not an integer: {value!r}")
    return value


def optional_integer(value: Any, what: str) -> int | None:
    """``None``, or ``value`` when it is a JSON integer; else ``ValueError``."""
    return None if value is None else integer(value, what)


def symbol_text(value: Any) -> str:
    """A non-empty text, upper case; else ``TypeError``."""
    if not isinstance(value, str) or not value:
        raise TypeError(f"symbol is not a text: {value!r}")
    return value.upper()


def opaque_trade_id(value: Any) -> str | int:
    """A trade id that can only be compared for equality (UUID or number)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"trade id is not a text or an integer: {value!r}")
    return value


def as_dict(value: Any, what: str) -> dict[str, Any]:
    """``value`` when it is a JSON object; else ``TypeError``."""
    if not isinstance(value, dict):
        raise TypeError(f"{what} is not an object")
    return value


def objects(value: Any, what: str, item: str) -> Iterator[dict[str, Any]]:
    """The items of ``value``, each checked to be an object (``TypeError`` naming ``item``) as
    it is reached; ``ValueError`` at once when ``value`` is not a list."""
    if not isinstance(value, list):
        raise ValueError(f"{what} is not a list")
    return (as_dict(v, item) for v in value)


def entries(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """``obj["data"]`` when it is a list of objects; else ``TypeError``."""
    data = obj["data"]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise TypeError("data is not a list of objects")
    return data


def level_list(levels: Any) -> list[Any]:
    """``levels`` when it is a list; else ``TypeError``."""
    if not isinstance(levels, list):
        raise TypeError("book levels are not a list")
    return levels


def price_size(levels: Any) -> list[Any]:
    """``[price, size, ...]`` levels cut to ``[price, size]``; other shapes are kept for the book
    to flag."""
    return [lv[:2] if isinstance(lv, list) and len(lv) >= 2 else lv for lv in level_list(levels)]


def buy_sell(row: dict[str, Any]) -> int:
    """0 for a ``"Buy"`` row (bids), 1 for a ``"Sell"`` row (asks); else ``ValueError``."""
    side = row["side"]
    if side == "Buy":
        return 0
    if side == "Sell":
        return 1
    raise ValueError(f"unknown side {side!r}")


def lower(value: Any) -> str | None:
    """A text in lower case; anything else is unknown (``None``)."""
    return value.lower() if isinstance(value, str) else None


def number_text(value: Any) -> str:
    """A number's text from a decoder that kept floats as text (ints come back as int)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"not a number: {value!r}")


def exact_json(raw: bytes) -> Any:
    """Decode JSON keeping every non-integer number as its exact text."""
    return json.loads(raw, parse_float=str)


def iso_us(value: Any) -> int | None:
    """An ISO-8601 UTC time (``...Z``) to epoch microseconds; None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        return iso_to_us(value.encode("ascii"))
    except (UnicodeEncodeError, ValueError):
        return None
