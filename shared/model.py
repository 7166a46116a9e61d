"""The records that flow through the core: raw lines, normalized events, findings.

Prices and quantities are always the exact text the exchange sent (``str``); nothing here
holds a float price or quantity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple


class Channel(StrEnum):
    BOOK = "book"
    TRADES = "trades"
    FUNDING = "funding"


class Fault(StrEnum):
    """Every fault kind of the report contract, in the contract's order."""

    GAP = "gap"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"
    CROSSED_BOOK = "crossed_book"
    INVALID_VALUE = "invalid_value"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    TIMESTAMP_DRIFT = "timestamp_drift"
    FUNDING_DISCONTINUITY = "funding_discontinuity"
    DISCONNECT = "disconnect"
    SNAPSHOT_MISMATCH = "snapshot_mismatch"
    FORMAT_CHANGE = "format_change"


FAULT_KINDS: tuple[str, ...] = tuple(f.value for f in Fault)


class StreamKey(NamedTuple):
    """One stream: exchange (Tardis id) x symbol x channel.  A tuple, so hashing is cheap."""

    exchange: str
    symbol: str
    channel: str

    def label(self) -> str:
        return f"{self.exchange}/{self.symbol}/{self.channel}"


@dataclass(slots=True)
class RawRecord:
    """One message as read from a capture, before any venue looked at it.

    ``kind`` is ``json`` (``raw`` holds the JSON text), ``disconnect`` (a recorder
    disconnect marker), ``row`` (``obj`` holds an already-normalized event, e.g. from
    Tardis CSV), ``malformed`` (``error`` says why) or ``cut_off`` (the file ends early
    there: malformed, and the file is damaged).
    """

    path: str
    line: int
    local_us: int | None
    kind: str
    raw: bytes = b""
    url: str | None = None
    obj: Any = None
    error: str | None = None

    @classmethod
    def cut_off(cls, path: str, line: int, why: str) -> RawRecord:
        """The compressed stream ended early or is corrupt at ``line``: a malformed line that
        also says the file was cut off."""
        return cls(path, line, None, "cut_off", error=why)


Level = list[str]  # [price_text, qty_text] (a list because that is what JSON decoders give)


@dataclass(slots=True)
class BookMsg:
    """One exchange book message (snapshot or delta) for one stream."""

    key: StreamKey
    local_us: int | None
    exch_us: int | None
    snapshot: bool
    bids: list[Any]
    asks: list[Any]
    path: str
    line: int
    first_id: int | None = None
    last_id: int | None = None
    prev_id: int | None = None
    checksum: int | None = None
    # A REST snapshot that the following stream has to be bridged onto (Binance).
    bridge: bool = False
    # Identity for venues without ids (byte-identical repeats are duplicates).
    raw: bytes | None = None
    # Bybit ``u == 1``: a delta that is really a full snapshot after a restart.
    reset: bool = False
    # The venue keeps only this many levels per side (Kraken ``book-N``): trim after applying.
    depth: int | None = None


@dataclass(slots=True)
class TradeMsg:
    key: StreamKey
    local_us: int | None
    exch_us: int | None
    trade_id: int | str | None
    price: str
    qty: str
    side: str | None
    path: str
    line: int
    raw: bytes | None = None
    # Id series inside one trade stream (Binance ``trade`` ids vs ``aggTrade`` ids).
    series: str = ""

    # A trade is its own sequence range, so the book's sequencing rules apply to it.
    @property
    def first_id(self) -> int | str | None:
        return self.trade_id

    @property
    def last_id(self) -> int | str | None:
        return self.trade_id

    @property
    def prev_id(self) -> None:
        return None


@dataclass(slots=True)
class FundingMsg:
    key: StreamKey
    local_us: int | None
    exch_us: int | None
    funding_time_us: int | None
    rate: str | None
    path: str
    line: int


@dataclass(slots=True)
class Disconnect:
    """A recorder disconnect: every book stream of the session is unknown until its next snapshot."""

    path: str
    line: int
    local_us: int | None


Event = BookMsg | TradeMsg | FundingMsg | Disconnect


@dataclass(slots=True)
class Finding:
    """One fault found in one stream, located in its input."""

    key: StreamKey
    fault: str
    path: str
    line: int
    local_us: int | None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_row(self) -> list[Any]:
        """The finding without its stream, as one JSON array (what a spool keeps)."""
        return [str(self.fault), self.path, self.line, self.local_us, self.detail]

    @classmethod
    def from_row(cls, key: StreamKey, row: list[Any]) -> Finding:
        return cls(key, row[0], row[1], row[2], row[3], row[4])


def _whole(value: Any) -> Any:
    """An integer written as text (beyond what JSON holds) as an integer again."""
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return value


@dataclass(slots=True)
class Unsafe:
    """An interval of receive time in which a stream's rebuilt book could not be trusted:
    from the message that made it so (``cause``: the fault, or ``no_snapshot`` before the
    book's first snapshot) to the one that made it trustworthy again (None: to the end)."""

    from_us: int | None
    to_us: int | None
    cause: str
    messages: int = 0  # messages received while it lasted
    # Still unsafe when its part of the stream ended: the last message's receive time.
    ends_us: int | None = None

    def as_json(self) -> list[Any]:
        return [self.from_us, self.to_us, self.cause, self.messages, self.ends_us]

    @classmethod
    def from_json(cls, data: list[Any]) -> Unsafe:
        return cls(data[0], data[1], data[2], int(data[3]), data[4] if len(data) > 4 else None)


@dataclass(slots=True)
class Gap:
    after: int | None
    before: int | None
    missing: int | None
    repaired: bool = False
    source: str | None = None
    local_us: int | None = None  # receive time of the first message after the break
    # What a replay source needs to fill it: the receive time of the last message applied
    # before the break, the next message's link to its predecessor (prev-link venues) and the
    # trade id series; and, when no source filled it, why not (by source).
    from_us: int | None = None
    link: int | None = None
    series: str = ""
    reasons: dict[str, str] | None = None

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "after": self.after,
            "before": self.before,
            "missing": self.missing,
            "repaired": self.repaired,
            "source": self.source,
            "local_us": self.local_us,
        }
        if self.reasons is not None:
            data["unrepaired"] = self.reasons
        return data

    def as_row(self) -> list[Any]:
        """The gap as one JSON array (what a spool keeps)."""
        return [
            self.after,
            self.before,
            self.missing,
            self.repaired,
            self.source,
            self.local_us,
            self.from_us,
            self.link,
            self.series,
            self.reasons,
        ]

    @classmethod
    def from_row(cls, row: list[Any]) -> Gap:
        # Ids beyond 64 bits come back from JSON as text: numbers again.
        after, before, missing = (_whole(v) for v in row[:3])
        return cls(
            after, before, missing, bool(row[3]), row[4], row[5], row[6], _whole(row[7]), row[8], row[9]
        )
