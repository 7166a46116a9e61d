"""What a venue module provides: recognising its messages, parsing them, its rules.

A venue module exposes one :class:`Venue`.  The engine picks the venue of a capture
from the recorder's URL when there is one, else by asking each venue whether it
recognises the first messages (``sniff``).  It then opens one :class:`Session` per
capture (per connection), because some venues need connection state to parse (Kraken's
channel ids, Bitfinex's channel map, the symbol of a bare Binance REST snapshot).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from shared.book import Book
from shared.errors import RetapeError
from shared.model import Event, RawRecord, StreamKey
from shared.sequencing import NONE, Rule

HOUR_US = 3_600_000_000


class VenueParseError(RetapeError, ValueError):
    """A message of a known venue that does not have the shape the venue documents."""


class UnknownEvent(VenueParseError):
    """A message on a channel the venue module audits, of an event type it does not know:
    the exchange changed its format (a ``format_change``), not a damaged line."""

    def __init__(self, kind: str, channel: str, key: StreamKey | None = None) -> None:
        super().__init__(f"{channel} message of an unknown event type {kind!r}")
        self.kind = kind
        self.channel = channel
        self.key = key  # the stream it was sent on, when the message says


@dataclass(frozen=True, slots=True)
class VenueRules:
    """The rules the auditors apply to one exchange id's streams."""

    exchange: str
    book_rule: Rule = NONE
    trade_rule: Rule = NONE
    # CRC of the book after a message, in the form the venue sends it; None: no checksum.
    checksum: Callable[[Book], int] | None = None
    funding_interval_us: int | None = None
    funding_cap: Decimal | None = None


class Session(Protocol):
    def parse(self, rec: RawRecord, obj: Any) -> Sequence[Event]:
        """Normalized events of one decoded message; empty for messages with no market data
        (subscription answers, heartbeats, tickers).  Raise :class:`VenueParseError`
        (or let KeyError/TypeError/ValueError escape) for a message of the wrong shape."""
        ...


@dataclass(frozen=True, slots=True)
class Venue:
    name: str
    # Substrings of recorder URLs (cryptofeed header and REST lines) that mean this venue.
    url_marks: tuple[str, ...]
    # File-name prefixes used by cryptofeed (``BINANCE_FUTURES.ws.1.0``).
    file_prefixes: tuple[str, ...]
    sniff: Callable[[Any], bool]
    session: Callable[[str | None], Session]
    rules: tuple[VenueRules, ...]


# Epoch times beyond this (year ~2286 in ms, ~33658 in µs) are not times: treated as absent.
MAX_EPOCH_MS = 10**13
MAX_EPOCH_US = 10**15 * 2


def ms_to_us(value: Any) -> int | None:
    """Integer epoch milliseconds (a JSON int, or its decimal text) to microseconds; else None."""
    if type(value) is str and value.isdigit() and len(value) <= 14:
        value = int(value)
    if type(value) is not int or not 0 <= value < MAX_EPOCH_MS:
        return None
    return value * 1000


def seconds_to_us(value: Any) -> int | None:
    """Epoch seconds (number or decimal text) to integer microseconds, exactly."""
    if value is None or isinstance(value, bool):
        return None
    if type(value) not in (int, float, str, Decimal):
        return None
    text = str(value)
    if len(text) > 40:
        return None
    try:
        us = int(Decimal(text).scaleb(6).to_integral_value())
    except (ArithmeticError, TypeError, ValueError):
        return None
    return us if 0 <= us < MAX_EPOCH_US else None
