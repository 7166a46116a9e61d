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
and its ``prev_id`` the seq of the stream's previous message on the connection, once every
seq between the two has been seen (then the ones between belong to other channels).  While
some seq between them has not been seen, the link is unproven and ``prev_id`` is None; the
message is held back by the stream's reorder window, like any message that does not follow.

- A seq that arrives late (messages reordered on the connection) closes its hole: every
  message held unproven whose link it completes gets its ``prev_id`` then (the session sets
  it on the event already handed out, which the stream's sequencer still holds), and is
  applied in its place, without a gap.  Two messages of one book stream swapped are one
  ``out_of_order``; messages of different channels swapped leave every stream in order, so
  nothing is reported.
- A seq that never arrives (a message lost) leaves the link unproven for good: each book
  stream whose next message lies beyond it reports one gap when its window gives up
  (``missing`` unknown: the lost message may have belonged to any channel) and stays unsafe
  until a new snapshot.  Trade streams cannot show such a break: their ids are trade ids
  (only ordering and duplicates are checked).
- A seq seen before is a repeat: its message gets the same ids as the first time, so the
  stream's rule finds them already applied (``duplicate``) and it is not applied twice.

Without ``SEQ_ALL`` book messages carry no ids; with the ``TIMESTAMP`` flag (32768) each
update carries its bytes (``BookMsg.raw``), the time among them, so a byte-identical repeat
is a duplicate; with neither there is no way to tell a repeat (every update holds absolute
level values, so applying one again changes nothing).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
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


# Seqs of a book stream remembered (to find a message's predecessor on its stream), and
# messages kept while their link is unproven (the oldest are given up: they stay gaps).
KEEP_SEQS = 4096
KEEP_UNPROVEN = 4096


@dataclass(slots=True)
class _Holes:
    """The connection seqs not seen (yet) below the highest one seen: disjoint intervals
    ``[lo[i], hi[i]]`` in increasing order (usually none)."""

    lo: list[int] = field(default_factory=list)
    hi: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.lo)

    def add(self, lo: int, hi: int) -> None:
        """Seqs ``lo..hi`` skipped: above every hole already open."""
        self.lo.append(lo)
        self.hi.append(hi)

    def fill(self, seq: int) -> bool:
        """``seq`` arrived: True when it was missing (it arrived late), False for a repeat."""
        i = bisect_right(self.lo, seq) - 1
        if i < 0 or self.hi[i] < seq:
            return False
        lo, hi = self.lo[i], self.hi[i]
        if lo == hi:
            del self.lo[i], self.hi[i]
        elif seq == lo:
            self.lo[i] = seq + 1
        elif seq == hi:
            self.hi[i] = seq - 1
        else:
            self.hi[i] = seq - 1
            self.lo.insert(i + 1, seq + 1)
            self.hi.insert(i + 1, hi)
        return True

    def within(self, lo: int, hi: int) -> bool:
        """Some seq of ``lo..hi`` is missing."""
        if lo > hi:
            return False
        i = bisect_right(self.lo, hi) - 1
        return i >= 0 and self.hi[i] >= lo


@dataclass(slots=True)
class BitfinexSession:
    """One Bitfinex connection: channel map, flags and the connection-wide sequence."""

    url: str | None = None
    flags: int | None = None
    channels: dict[int, _Channel] = field(default_factory=dict)
    # The highest connection seq seen, and the seqs below it not seen (yet).
    conn_last: int | None = None
    holes: _Holes = field(default_factory=_Holes)
    # Per book stream, the seqs of its messages seen on this connection, in order.
    stream_seqs: dict[StreamKey, list[int]] = field(default_factory=dict)
    # Book messages handed out with ``prev_id`` None because a seq before them was missing.
    unproven: list[BookMsg] = field(default_factory=list)
    last_trade: dict[StreamKey, int] = field(default_factory=dict)

    @property
    def breaks(self) -> int:
        """Runs of connection seqs missing now (messages lost, or not arrived yet)."""
        return len(self.holes)

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
        late = self._step(seq)
        try:
            return self._data(rec, obj, seq, ts_ms)
        finally:
            if late:
                self._prove()

    def _data(self, rec: RawRecord, obj: list[Any], seq: int | None, ts_ms: int | None) -> Sequence[Event]:
        channel = self.channels.get(obj[0])
        if channel is None or channel.key is None or obj[1] in ("hb", "tu"):
            return ()
        if channel.kind == "book":
            if seq is not None:
                # Before the levels are read: a message that turns out malformed is still a
                # message of this stream, so the next one does not seem to follow the one before.
                self._seen(channel.key, seq)
            return self._book(rec, exact_json(rec.raw), channel, seq, ts_ms)
        if channel.kind == "trades":
            return self._trades(rec, exact_json(rec.raw), channel.key)
        return ()

    # -- connection state ----------------------------------------------------------------

    def _event(self, obj: dict[str, Any]) -> None:
        event = obj.get("event")
        if event == "info" and "version" in obj:
            # A new connection: channel numbers and the sequence start over.
            self.channels.clear()
            self.conn_last = None
            self.holes = _Holes()
            self.stream_seqs.clear()
            self.unproven.clear()
            self.flags = None
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

    def _step(self, seq: int | None) -> bool:
        """Advance the connection sequence; True when ``seq`` arrived late (closing a hole)."""
        if seq is None:
            return False
        last = self.conn_last
        if last is None or seq > last:
            if last is not None and seq > last + 1:
                self.holes.add(last + 1, seq - 1)
            self.conn_last = seq
            return False
        # Below the highest seq: late when it was missing, else a repeat (which gets the ids
        # of its first arrival, so the stream's rule finds them already applied).
        return self.holes.fill(seq)

    def _seen(self, key: StreamKey, seq: int) -> None:
        seqs = self.stream_seqs.setdefault(key, [])
        if not seqs or seq > seqs[-1]:
            seqs.append(seq)
            if len(seqs) > 2 * KEEP_SEQS:
                del seqs[:-KEEP_SEQS]
            return
        i = bisect_left(seqs, seq)
        if seqs[i] != seq:
            seqs.insert(i, seq)

    def _proven(self, key: StreamKey, seq: int) -> int | None:
        """The seq of the stream's message before ``seq`` when every seq between the two was
        seen (so all of them belong to other channels); else None."""
        seqs = self.stream_seqs.get(key, [])
        i = bisect_left(seqs, seq)
        if i == 0:
            return None  # the stream's first message on this connection (or one long gone)
        prev = seqs[i - 1]
        return None if self.holes.within(prev + 1, seq - 1) else prev

    def _link(self, key: StreamKey, seq: int | None, snapshot: bool) -> int | None:
        """The ``prev_id`` of a book message (see the module docstring)."""
        if seq is None or snapshot:
            return None
        return self._proven(key, seq)

    def _hold(self, msg: BookMsg) -> None:
        """``msg`` went out unproven: its link may be proven by a seq that arrives late."""
        assert msg.last_id is not None
        seqs = self.stream_seqs.get(msg.key, [])
        if seqs and seqs[0] < msg.last_id:  # it has a predecessor that a late seq can link it to
            self.unproven.append(msg)
            if len(self.unproven) > KEEP_UNPROVEN:
                del self.unproven[0]

    def _prove(self) -> None:
        """A late seq closed a hole: link the messages it proves."""
        still: list[BookMsg] = []
        for msg in self.unproven:
            assert msg.last_id is not None
            prev = self._proven(msg.key, msg.last_id)
            if prev is None:
                still.append(msg)
            else:
                msg.prev_id = prev
        self.unproven = still

    # -- books ---------------------------------------------------------------------------

    def _book(
        self, rec: RawRecord, obj: list[Any], channel: _Channel, seq: int | None, ts_ms: int | None
    ) -> Sequence[Event]:
        key = channel.key
        assert key is not None
        exch_us = ms_to_us(ts_ms)
        bids: list[Any] = []
        asks: list[Any] = []
        cs: int | None = None
        if obj[1] == "cs":
            cs = integer(obj[2], "checksum")
            snapshot = False
        else:
            payload = obj[1]
            if not isinstance(payload, list):
                raise TypeError("book message without levels")
            snapshot = not payload or isinstance(payload[0], list)
            for level in payload if snapshot else [payload]:
                self._level(level, bids, asks)
        msg = BookMsg(
            key,
            rec.local_us,
            exch_us,
            snapshot,
            bids,
            asks,
            rec.path,
            rec.line,
            last_id=seq,
            prev_id=self._link(key, seq, snapshot),
            checksum=cs,
            # Without ids, a repeat is known by its bytes when they hold the time.
            raw=rec.raw if seq is None and ts_ms is not None and not snapshot else None,
            depth=channel.depth,
        )
        if seq is not None and not snapshot and msg.prev_id is None:
            self._hold(msg)
        return (msg,)

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
