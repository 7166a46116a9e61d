"""Bitfinex WS v2 (Tardis id ``bitfinex``).

Channels are numbered per connection: ``{"event": "subscribed", "chanId", "channel",
"symbol"|"key", ...}`` maps a number to a book or trade stream.  Data messages:

- book snapshot ``[chanId, [[price, count, amount], ...], seq]``, update
  ``[chanId, [price, count, amount], seq]``: amount > 0 is a bid, < 0 an ask (the book keeps
  the absolute value, as text); count 0 deletes.  ``[chanId, "cs", checksum, seq]`` carries
  the CRC-32 of the top 25 (flag ``OB_CHECKSUM``).  Only ``P0`` books of trading pairs are
  read (raw ``R0`` and aggregated ``P1``-``P4`` books, and funding books, are skipped).
- trades snapshot ``[chanId, [[id, mts, amount, price], ...], seq]`` (newest first) and
  ``[chanId, "te", [id, mts, amount, price], seq]``; ``tu`` repeats a ``te`` trade and is
  skipped.  Trade ids increase.
- heartbeats ``[chanId, "hb", seq]``.

Numbers are JSON numbers written by Bitfinex's JavaScript; each message is decoded again
keeping every non-integer number's exact text.

Sequencing: with ``SEQ_ALL`` (conf flag 65536) every data message ends with a number that
counts all messages of the *connection* (``seq == previous seq + 1``), so it cannot be
checked per stream.  The session checks it across the connection and turns it into ids the
per-stream PREV_LINK rule understands: a book message's ``last_id`` is its connection seq
and its ``prev_id`` the seq of the stream's previous message, as long as the connection
sequence has been unbroken since then.  After a break (any channel's message missing), no
book stream of the connection can be trusted: each one's next message gets ``prev_id``
None, so each book stream reports one gap (``missing`` unknown: the lost messages may have
belonged to any channel) and stays unsafe until a new snapshot.  Trade streams cannot show
such a break: their ids are trade ids (only ordering and duplicates are checked), and a
break that only trade messages fell into is visible in the book streams' gaps alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared import checksums
from shared.book import Book
from shared.exchanges._fields import exact_json, integer, is_int, number_text
from shared.exchanges.base import Venue, VenueRules, ms_to_us
from shared.model import BookMsg, Channel, Event, RawRecord, StreamKey, TradeMsg
from shared.sequencing import INCREASING, PREV_LINK

EXCHANGE = "bitfinex"

FLAG_TIMESTAMP = 32768
FLAG_SEQ_ALL = 65536
FLAG_OB_CHECKSUM = 131072


def _bitfinex_checksum(book: Book) -> int:
    return checksums.bitfinex(
        book.bids.top(checksums.BITFINEX_DEPTH), book.asks.top(checksums.BITFINEX_DEPTH)
    )


RULES = (VenueRules(EXCHANGE, book_rule=PREV_LINK, trade_rule=INCREASING, checksum=_bitfinex_checksum),)

_TAGS = frozenset({"hb", "cs", "te", "tu", "fte", "ftu"})


def _sniff(obj: Any) -> bool:
    if isinstance(obj, dict):
        event = obj.get("event")
        if event == "subscribed":
            return "chanId" in obj
        if event == "info":  # Kraken Futures also greets with ``info``, as version 1
            return obj.get("version") == 2 or "platform" in obj
        return event == "conf" and "flags" in obj
    if (
        isinstance(obj, list)
        and 2 <= len(obj) <= 5
        and isinstance(obj[0], int)
        and not isinstance(obj[0], bool)
    ):
        return (isinstance(obj[1], list) or obj[1] in _TAGS) and not isinstance(obj[-1], str)
    return False


@dataclass(slots=True)
class _Channel:
    kind: str  # "book", "trades" or "other"
    key: StreamKey | None = None
    depth: int | None = None


@dataclass(slots=True)
class _Link:
    seq: int
    epoch: int


@dataclass(slots=True)
class BitfinexSession:
    """One Bitfinex connection: channel map, flags and the connection-wide sequence."""

    url: str | None = None
    flags: int | None = None
    channels: dict[int, _Channel] = field(default_factory=dict)
    conn_last: int | None = None
    # Bumped at every break of the connection sequence and at every new connection.
    epoch: int = 0
    breaks: int = 0
    links: dict[StreamKey, _Link] = field(default_factory=dict)
    last_trade: dict[StreamKey, int] = field(default_factory=dict)

    def parse(self, rec: RawRecord, obj: Any) -> Sequence[Event]:
        if isinstance(obj, dict):
            self._event(obj)
            return ()
        if not isinstance(obj, list) or len(obj) < 2 or not is_int(obj[0]):
            return ()
        tagged = isinstance(obj[1], str)
        payload_end = 3 if tagged and obj[1] != "hb" else 2
        if len(obj) < payload_end:
            raise ValueError(f"{obj[1]!r} message without its payload")
        seq, ts_ms = self._trailer(obj[payload_end:])
        self._step(seq)
        channel = self.channels.get(obj[0])
        if channel is None or channel.key is None or obj[1] in ("hb", "tu"):
            return ()
        exact = exact_json(rec.raw)
        if channel.kind == "book":
            return self._book(rec, exact, channel, seq, ts_ms)
        if channel.kind == "trades":
            return self._trades(rec, exact, channel.key)
        return ()

    # -- connection state ----------------------------------------------------------------

    def _event(self, obj: dict[str, Any]) -> None:
        event = obj.get("event")
        if event == "info" and "version" in obj:
            # A new connection: channel numbers and the sequence start over.
            self.channels.clear()
            self.conn_last = None
            self.flags = None
            self.epoch += 1
        elif event == "conf" and is_int(obj.get("flags")) and obj.get("status", "OK") == "OK":
            self.flags = obj["flags"]
        elif event == "subscribed" and is_int(obj.get("chanId")):
            self.channels[obj["chanId"]] = self._channel(obj)
        elif event == "unsubscribed" and is_int(obj.get("chanId")):
            self.channels.pop(obj["chanId"], None)

    @staticmethod
    def _channel(obj: dict[str, Any]) -> _Channel:
        kind = obj.get("channel")
        symbol = obj.get("symbol")
        if not isinstance(symbol, str) or not symbol.startswith("t"):
            return _Channel("other")  # funding (``f``) symbols, candles (``key``), tickers
        pair = symbol[1:].upper()
        if kind == "book":
            if obj.get("prec", "P0") != "P0":
                return _Channel("other")
            length = obj.get("len")
            depth = int(length) if isinstance(length, (int, str)) and str(length).isdigit() else None
            return _Channel("book", StreamKey(EXCHANGE, pair, Channel.BOOK), depth)
        if kind == "trades":
            return _Channel("trades", StreamKey(EXCHANGE, pair, Channel.TRADES))
        return _Channel("other")

    def _trailer(self, rest: list[Any]) -> tuple[int | None, int | None]:
        """(seq, timestamp ms) from what follows the payload."""
        # A sequence number is small, a millisecond time is not: that tells them apart
        # whatever their order.  The conf flags, when seen, say which ones to expect.
        seq = next((v for v in rest if is_int(v) and 0 <= v < 10**12), None)
        ts = next((v for v in rest if is_int(v) and v >= 10**12), None)
        flags = self.flags
        if flags is not None:
            if not flags & FLAG_SEQ_ALL:
                seq = None
            if not flags & FLAG_TIMESTAMP:
                ts = None
        return seq, ts

    def _step(self, seq: int | None) -> None:
        """Advance the connection sequence; a break starts a new epoch (no link survives it)."""
        if seq is None:
            return
        last = self.conn_last
        if last is None or seq == last + 1:
            self.conn_last = seq
        elif seq > last:
            self.conn_last = seq
            self.epoch += 1
            self.breaks += 1
        # seq <= last: a repeat; the stream's own rule finds it already applied.

    def _link(self, key: StreamKey, seq: int | None, snapshot: bool) -> int | None:
        """The ``prev_id`` of a book message: the stream's previous seq while the link holds."""
        if seq is None:
            return None
        link = self.links.get(key)
        prev = link.seq if link is not None and link.epoch == self.epoch and not snapshot else None
        if link is None or snapshot or link.epoch != self.epoch or seq > link.seq:
            self.links[key] = _Link(seq, self.epoch)
        return prev

    # -- books ---------------------------------------------------------------------------

    def _book(
        self, rec: RawRecord, obj: list[Any], channel: _Channel, seq: int | None, ts_ms: int | None
    ) -> Sequence[Event]:
        key = channel.key
        assert key is not None
        exch_us = ms_to_us(ts_ms)
        if obj[1] == "cs":
            cs = integer(obj[2], "checksum")
            prev = self._link(key, seq, False)
            return (
                BookMsg(
                    key,
                    rec.local_us,
                    exch_us,
                    False,
                    [],
                    [],
                    rec.path,
                    rec.line,
                    last_id=seq,
                    prev_id=prev,
                    checksum=cs,
                    depth=channel.depth,
                ),
            )
        payload = obj[1]
        if not isinstance(payload, list):
            raise TypeError("book message without levels")
        snapshot = not payload or isinstance(payload[0], list)
        bids: list[Any] = []
        asks: list[Any] = []
        for level in payload if snapshot else [payload]:
            self._level(level, bids, asks)
        prev = self._link(key, seq, snapshot)
        return (
            BookMsg(
                key,
                rec.local_us,
                exch_us,
                snapshot,
                bids,
                asks,
                rec.path,
                rec.line,
                last_id=seq,
                prev_id=prev,
                depth=channel.depth,
            ),
        )

    @staticmethod
    def _level(level: Any, bids: list[Any], asks: list[Any]) -> None:
        if not isinstance(level, list) or len(level) != 3:
            raise ValueError(f"book level of the wrong shape: {level!r}")
        price, count, amount = number_text(level[0]), level[1], number_text(level[2])
        if not is_int(count):
            raise ValueError(f"book level count is not an integer: {count!r}")
        ask = amount.startswith("-")
        qty = amount[1:] if ask else amount
        if count == 0:
            qty = "0"
        elif qty.strip("0.") == "":
            raise ValueError(f"book level with amount 0 and count {count}")
        (asks if ask else bids).append([price, qty])

    # -- trades --------------------------------------------------------------------------

    def _trades(self, rec: RawRecord, obj: list[Any], key: StreamKey) -> Sequence[Event]:
        snapshot = isinstance(obj[1], list)
        if obj[1] == "te":
            rows = [obj[2]]
        elif snapshot:
            rows = sorted(obj[1], key=lambda r: r[0])  # a snapshot lists the newest first
        else:
            return ()
        out: list[Event] = []
        last = self.last_trade.get(key)
        for row in rows:
            if not isinstance(row, list) or len(row) < 4 or not is_int(row[0]):
                raise ValueError(f"trade of the wrong shape: {row!r}")
            trade_id = row[0]
            # A snapshot on (re)subscription repeats recent trades: only new ones are events.
            if snapshot and last is not None and trade_id <= last:
                continue
            amount = number_text(row[2])
            sell = amount.startswith("-")
            out.append(
                TradeMsg(
                    key,
                    # A snapshot's trades are history, not received live: no receive time.
                    None if snapshot else rec.local_us,
                    ms_to_us(row[1]),
                    trade_id,
                    number_text(row[3]),
                    amount[1:] if sell else amount,
                    "sell" if sell else "buy",
                    rec.path,
                    rec.line,
                )
            )
            if last is None or trade_id > last:
                last = trade_id
        if last is not None:
            self.last_trade[key] = last
        return out


VENUE = Venue(
    name="bitfinex",
    url_marks=("api.bitfinex.com", "api-pub.bitfinex.com"),
    file_prefixes=("BITFINEX",),
    sniff=_sniff,
    session=BitfinexSession,
    rules=RULES,
)
