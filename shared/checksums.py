"""Order-book checksums, exactly as each venue computes them (pure functions, no I/O).

Every function takes the top of the book after a message was applied, best first, as
``(price, qty)`` pairs holding the values the exchange sent (decimal text; FTX: the JSON
floats it sent) and returns the CRC-32 in the form the venue puts on the wire.  An empty
book gives the CRC of the empty string: 0 for every venue.

The string is always built from the exact text.  FTX is the one venue whose rule *is* a
float formatting: its servers format Python floats, so the text is ``repr(float)``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from shared.errors import UsageError

Levels = Sequence[Sequence[Any]]  # best-first (price, qty) pairs; extra fields are ignored

OKX_DEPTH = 25
KRAKEN_DEPTH = 10
FTX_DEPTH = 100
BITFINEX_DEPTH = 25


def _signed(crc: int) -> int:
    return crc - (1 << 32) if crc & 0x8000_0000 else crc


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("ascii"))


def _text(value: Any) -> str:
    """The decimal text of a value: text as it is, integers and Decimals without exponent."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise TypeError(f"not a price or quantity: {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        # A JSON number a decoder already turned into a float: its repr is its text.
        return repr(value)
    raise TypeError(f"not a price or quantity: {value!r}")


def _interleave(
    bids: Levels, asks: Levels, depth: int, bid_text: Callable[[Any], str], ask_qty: Callable[[Any], str]
) -> str:
    """``bidPx:bidSz:askPx:askSz:...`` over ``depth`` levels; a side that ran out is skipped."""
    parts: list[str] = []
    nb = min(len(bids), depth)
    na = min(len(asks), depth)
    for i in range(max(nb, na)):
        if i < nb:
            level = bids[i]
            parts.append(bid_text(level[0]))
            parts.append(bid_text(level[1]))
        if i < na:
            level = asks[i]
            parts.append(bid_text(level[0]))
            parts.append(ask_qty(level[1]))
    return ":".join(parts)


def okx(bids: Levels, asks: Levels) -> int:
    """OKX v5 (and v3): top 25 interleaved ``bidPx:bidSz:askPx:askSz``; signed 32-bit."""
    return _signed(_crc(_interleave(bids, asks, OKX_DEPTH, _text, _text)))


def _kraken_number(value: Any) -> str:
    return _text(value).replace(".", "").lstrip("0")


def kraken(bids: Levels, asks: Levels) -> int:
    """Kraken spot v1/v2: top 10 asks then top 10 bids, each price then qty with the ``.``
    removed and leading zeros stripped, concatenated; unsigned."""
    parts: list[str] = []
    for side in (asks, bids):
        for level in side[:KRAKEN_DEPTH]:
            parts.append(_kraken_number(level[0]))
            parts.append(_kraken_number(level[1]))
    return _crc("".join(parts))


def _ftx_number(value: Any) -> str:
    # FTX formats Python floats (``10.0``, ``1e-05``): the float repr is the rule itself.
    if isinstance(value, bool):
        raise TypeError(f"not a price or quantity: {value!r}")
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (str, int, Decimal)):
        return repr(float(value))
    raise TypeError(f"not a price or quantity: {value!r}")


def ftx(bids: Levels, asks: Levels) -> int:
    """FTX / FTX US: top 100 interleaved ``bidPx:bidSz:askPx:askSz`` as Python float reprs; unsigned."""
    return _crc(_interleave(bids, asks, FTX_DEPTH, _ftx_number, _ftx_number))


def js_number(value: float) -> str:
    """A float as JavaScript's ``Number.prototype.toString`` writes it (Bitfinex's servers)."""
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"not a finite number: {value!r}")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr gives the shortest round-tripping digits, which is what JavaScript uses too.
    dec = Decimal(repr(abs(value)))
    t = dec.as_tuple()
    digits = "".join(map(str, t.digits)).rstrip("0") or "0"
    assert isinstance(t.exponent, int)
    k = len(digits)
    n = len(t.digits) + t.exponent  # value = 0.digits x 10^n
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
        body = f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + body


def _bitfinex_number(value: Any) -> str:
    if isinstance(value, float):
        return js_number(value)
    return _text(value)


def _bitfinex_ask_amount(value: Any) -> str:
    text = _bitfinex_number(value)
    # The book keeps ask amounts as absolute values; on the wire (and in the CRC) they are
    # negative.  Text that is already negative (a book copied from the wire) stays as it is.
    return text if text.startswith("-") else "-" + text


def bitfinex(bids: Levels, asks: Levels) -> int:
    """Bitfinex v2: top 25 interleaved ``bidPx:bidAmt:askPx:askAmt`` with ask amounts
    negative; signed 32-bit."""
    return _signed(_crc(_interleave(bids, asks, BITFINEX_DEPTH, _bitfinex_number, _bitfinex_ask_amount)))


# Tardis exchange ids.
_BY_EXCHANGE: dict[str, Callable[[Levels, Levels], int]] = {
    "okex": okx,
    "okex-swap": okx,
    "okex-futures": okx,
    "okex-options": okx,
    "kraken": kraken,
    "ftx": ftx,
    "ftx-us": ftx,
    "ftx-tr": ftx,  # FTX Turkey ran FTX's engine (no Tardis id of its own; see exchanges/ftx.py)
    "bitfinex": bitfinex,
}

CHECKSUM_EXCHANGES: tuple[str, ...] = tuple(sorted(_BY_EXCHANGE))


def book_checksum(exchange_id: str, bids: Levels, asks: Levels) -> int:
    """The checksum ``exchange_id`` would send for this book (bids and asks best first).

    Raises :class:`UsageError` for an unknown exchange or a book of the wrong shape.  Give
    numbers as text (or decode JSON with ``parse_float=str``): a float has lost its text.
    """
    fn = _BY_EXCHANGE.get(exchange_id)
    if fn is None:
        raise UsageError(
            f"no checksum rule for exchange {exchange_id!r} (known: {', '.join(CHECKSUM_EXCHANGES)})"
        )
    for name, side in (("bids", bids), ("asks", asks)):
        for level in side:
            if not isinstance(level, (list, tuple)) or len(level) < 2:
                raise UsageError(f"{name}: a level must be [price, qty], got {level!r}")
    try:
        return fn(bids, asks)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"the book holds a value that is not a number: {exc}") from None
