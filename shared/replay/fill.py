"""Reading a replay source's answer and keeping only what bridges the gap.

Pure.  An answer is a run of ``(receive time, raw exchange JSON)`` records, read by the same
venue modules as a capture.  The fill it gives is the chain of the asked stream's messages
that continues the last id applied before the gap and that the message after the gap
continues in turn, by the venue's own continuity rule; anything else in the answer that is
inside the gap, or any message of another stream, rejects the whole answer (a source that
answers what was not asked is not trusted with the rest).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.exchanges import rules_for, venue_for_message, venue_for_url
from shared.exchanges.base import Session, UnknownEvent
from shared.model import BookMsg, Channel, Disconnect, RawRecord, StreamKey, TradeMsg
from shared.replay.request import FillRequest
from shared.sequencing import Rule

_PARSE_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError)

# The stream a recorder of each exchange id connects to: sessions that tell exchange ids apart
# by the connection (Binance spot, USD-M, COIN-M) learn it from here.
_WS_URLS = {
    "binance": "wss://stream.binance.com:9443/stream",
    "binance-us": "wss://stream.binance.us:9443/stream",
    "binance-futures": "wss://fstream.binance.com/stream",
    "binance-delivery": "wss://dstream.binance.com/stream",
    "ftx-us": "wss://ftx.us/ws/",
}

# A fill holds at most this many messages (a longer one is refused, not cut).
MAX_FILL_MESSAGES = 2_000_000

Record = tuple[int | None, bytes | None]  # (receive time, raw JSON); None: a disconnect


class AnswerRejected(Exception):
    """A source's answer that cannot be merged; the message says why, for the report."""


@dataclass(slots=True)
class Fill:
    """The messages a gap lost, in sequence order, and where they came from."""

    request: FillRequest
    source: str
    messages: list[BookMsg | TradeMsg]
    # Receive times the source recorded them at (first, last): when it saw them.
    source_from_us: int | None = None
    source_to_us: int | None = None

    @property
    def first_id(self) -> int | None:
        return _id(self.messages[0].first_id) if self.messages else None

    @property
    def last_id(self) -> int | None:
        return _id(self.messages[-1].last_id) if self.messages else None

    def provenance(self) -> dict[str, Any]:
        """What the audit records say about it: which ids came from where."""
        return {
            "repaired": True,
            "source": self.source,
            "replayed_messages": len(self.messages),
            "replayed_ids": [_text(self.first_id), _text(self.last_id)],
            "source_time_us": [self.source_from_us, self.source_to_us],
        }


@dataclass(slots=True)
class Answer:
    """What one sub-task hands back: the fill (if any source gave one) and, for every source
    that did not, why.  Bytes in the broker: a JSON header and zlib-compressed rows."""

    request: FillRequest
    fill: Fill | None = None
    reasons: dict[str, str] = field(default_factory=dict)
    # Requests made, for the replay metrics (not part of any report's bytes).
    stats: list[dict[str, Any]] = field(default_factory=list)

    def encode(self) -> bytes:
        fill = self.fill
        head = {
            "request": self.request.as_json(),
            "source": fill.source if fill else None,
            "source_time_us": [fill.source_from_us, fill.source_to_us] if fill else None,
            "reasons": self.reasons,
            "stats": self.stats,
        }
        rows = b"".join(orjson.dumps(message_row(m)) + b"\n" for m in (fill.messages if fill else ()))
        return orjson.dumps(head) + b"\n" + zlib.compress(rows, 1)

    @classmethod
    def decode(cls, raw: bytes) -> Answer:
        head_raw, _, body = raw.partition(b"\n")
        head = orjson.loads(head_raw)
        request = FillRequest.from_json(head["request"])
        fill = None
        if head.get("source") is not None:
            rows = zlib.decompress(body).splitlines() if body else []
            messages = [
                message_from_row(request.key, orjson.loads(r), head["source"], n)
                for n, r in enumerate(rows, 1)
            ]
            span = head.get("source_time_us") or [None, None]
            fill = Fill(request, head["source"], messages, span[0], span[1])
        return cls(request, fill, dict(head.get("reasons") or {}), list(head.get("stats") or []))


def _id(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def _text(value: int | None) -> str | None:
    return None if value is None else str(value)


def message_row(m: BookMsg | TradeMsg) -> list[Any]:
    """A fill message as a JSON array (prices and quantities stay the exchange's text; ids as
    text, since they may pass 2^53)."""
    if isinstance(m, BookMsg):
        return [
            "b",
            m.local_us,
            m.exch_us,
            m.bids,
            m.asks,
            _text(_id(m.first_id)),
            _text(_id(m.last_id)),
            _text(_id(m.prev_id)),
            m.checksum,
            m.depth,
        ]
    return ["t", m.local_us, m.exch_us, _text(_id(m.trade_id)), m.price, m.qty, m.side, m.series]


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def message_from_row(key: StreamKey, row: list[Any], source: str, line: int) -> BookMsg | TradeMsg:
    if row[0] == "b":
        _, local, exch, bids, asks, first, last, prev, checksum, depth = row
        return BookMsg(
            key, local, exch, False, bids, asks, source, line,
            first_id=_int(first), last_id=_int(last), prev_id=_int(prev), checksum=checksum, depth=depth,
        )  # fmt: skip
    _, local, exch, ident, price, qty, side, series = row
    return TradeMsg(key, local, exch, _int(ident), price, qty, side, source, line, series=series)


# -- reading an answer -------------------------------------------------------------------


def read_events(exchange: str, source: str, records: Iterable[Record]) -> Iterator[tuple[int, Any]]:
    """The events of an answer's records, with their line numbers, read by the venue module
    of ``exchange``.  A line the venue cannot read rejects the answer."""
    url = _WS_URLS.get(exchange)
    session: Session | None = None
    for line, (local_us, raw) in enumerate(records, 1):
        if raw is None:
            yield line, Disconnect(source, line, local_us)
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise AnswerRejected(f"line {line} is not JSON ({exc})") from None
        if session is None:
            venue = (venue_for_url(url) if url else None) or venue_for_message(obj)
            if venue is None:
                raise AnswerRejected(f"line {line} is no message of a venue retape knows")
            session = venue.session(url)
        rec = RawRecord(source, line, local_us, "json", raw, url=url)
        try:
            events = session.parse(rec, obj)
        except UnknownEvent:
            continue  # a kind of event this venue module does not audit
        except _PARSE_ERRORS as exc:
            raise AnswerRejected(
                f"line {line} is not a message of the shape {exchange} sends ({exc})"
            ) from None
        for ev in events:
            yield line, ev


@dataclass(frozen=True, slots=True)
class _Next:
    """The message after the gap, as far as continuity needs it."""

    first_id: int
    last_id: int
    prev_id: int | None


def _rule(key: StreamKey) -> Rule:
    """The continuity rule of ``key``'s stream."""
    rules = rules_for(key.exchange)
    return rules.trade_rule if key.channel == Channel.TRADES else rules.book_rule


# Venues whose ids number one connection's messages (Bitfinex's sequence): another recording
# of the stream, on another connection, has other ids, so no fill can be proven to bridge.
CONNECTION_IDS = frozenset({"bitfinex"})


def repairable(key: StreamKey) -> bool:
    """A gap of ``key`` can be filled: its venue numbers the stream's messages so that a fill
    can be proven to bridge it."""
    if key.exchange in CONNECTION_IDS:
        return False
    return _rule(key).name in ("consecutive", "prev-link") and key.channel in (Channel.BOOK, Channel.TRADES)


def select_fill(req: FillRequest, source: str, events: Iterable[tuple[int, Any]]) -> Fill:
    """The fill of ``req`` in a source's events, or :class:`AnswerRejected` saying why not.

    Kept: the asked stream's updates (book diffs, or trades of the asked id series) whose ids
    lie inside the gap.  They must chain from ``req.after`` to the message after the gap by
    the venue's rule, each once (a repeat with the same ids is dropped, as a capture's
    duplicate would be).  Snapshots and messages before or after the gap are not used.
    """
    rule = _rule(req.key)
    key = req.key
    after = req.after
    inside: dict[tuple[int, int], BookMsg | TradeMsg] = {}
    foreign: dict[StreamKey, int] = {}
    lo = hi = None  # the ids the answer's messages of the stream ran over
    first_us = last_us = None
    for _, ev in events:
        if isinstance(ev, Disconnect):
            continue
        if ev.key != key:
            if (
                ev.key.exchange == key.exchange
                and ev.key.symbol == key.symbol
                and ev.key.channel != key.channel
            ):
                continue  # another channel of the same instrument (a combined recording)
            foreign[ev.key] = foreign.get(ev.key, 0) + 1
            continue
        if isinstance(ev, BookMsg) and (ev.snapshot or ev.reset or ev.bridge):
            continue
        if isinstance(ev, TradeMsg) and ev.series != req.series:
            continue
        first, last = ev.first_id, ev.last_id
        if not isinstance(last, int):
            continue
        first = first if isinstance(first, int) else last
        lo = first if lo is None else min(lo, first)
        hi = last if hi is None else max(hi, last)
        if last <= after or rule.order(ev) >= req.before:
            continue
        inside.setdefault((first, last), ev)
        if len(inside) > MAX_FILL_MESSAGES:
            raise AnswerRejected(f"more than {MAX_FILL_MESSAGES} messages inside the gap")
        if ev.local_us is not None:
            first_us = ev.local_us if first_us is None else min(first_us, ev.local_us)
            last_us = ev.local_us if last_us is None else max(last_us, ev.local_us)
    if foreign:
        named = ", ".join(
            f"{k.exchange} {k.symbol} {k.channel} ({n})" for k, n in sorted(foreign.items())[:3]
        )
        raise AnswerRejected(f"it answered messages of streams not asked for: {named}")
    if not inside:
        seen = "no message of the stream" if lo is None else f"ids {lo} to {hi} only"
        raise AnswerRejected(f"it holds no message inside the gap (ids {after} to {req.before}): {seen}")
    chain = sorted(inside.values(), key=rule.order)
    last_id = after
    for m in chain:
        if not rule.follows(last_id, m):
            raise AnswerRejected(
                f"it does not bridge the gap: after id {last_id} its next message starts at {_first(m)}"
            )
        last_id = int(m.last_id)  # type: ignore[arg-type]
    nxt = _Next(req.before, req.before, req.link)
    if not rule.follows(last_id, nxt):
        raise AnswerRejected(
            f"it does not reach the message after the gap: it ends at id {last_id}, "
            f"that message starts at {req.before}"
            + (f" (links to {req.link})" if req.link is not None else "")
        )
    _place_in_time(chain, req)
    return Fill(req, source, chain, first_us, last_us)


def _first(m: Any) -> Any:
    return m.first_id if m.first_id is not None else m.last_id


def _place_in_time(chain: list[BookMsg | TradeMsg], req: FillRequest) -> None:
    """Receive times from the source's recorder, kept inside the gap of this one's, never
    going backwards: the fill sits between the messages around the gap."""
    lo, hi = req.from_us, req.to_us
    floor = lo
    for m in chain:
        t = m.local_us
        if t is None:
            t = floor
        if t is not None:
            if lo is not None and t < lo:
                t = lo
            if hi is not None and t > hi:
                t = hi
            if floor is not None and t < floor:
                t = floor
            floor = t
        m.local_us = t
