"""OKX (Tardis ids ``okex``, ``okex-swap``, ``okex-futures``, ``okex-options``).

v5 public channels ``{"arg": {"channel", "instId"}, "action"?, "data": [...]}``:

- books ``books``, ``books-l2-tbt``, ``books50-l2-tbt`` (``action`` snapshot/update) and
  ``books5``, ``bbo-tbt`` (no ``action``: every push is the whole top of the book, a snapshot);
  levels ``[px, sz, "0", numOrders]``; ``checksum`` (CRC-32 of the top 25, signed);
  ``seqId``/``prevSeqId`` since 2022 (``prevSeqId == previous seqId``; -1 on a snapshot;
  ``prevSeqId == seqId`` on the keep-alive pushed while the book does not change).
  Older captures have no ``seqId``: their events carry no ids and only the checksum
  guards them.  Updates carry their bytes (``BookMsg.raw``): every entry has its ``ts``, so
  a byte-identical repeat has the same exchange time, and is a duplicate where ids cannot
  tell (no ``seqId``, or a keep-alive).  OKX announced that from 2026-06-23 ``checksum`` is
  always 0: a 0 from then on means "no checksum".
- ``trades``/``trades-all``: ``tradeId`` per instrument, increasing but not contiguous.
- ``funding-rate``: ``fundingRate``, ``fundingTime``.

The exchange id follows the instrument: ``-SWAP`` perpetuals, ``BTC-USD-220527`` dated
futures, ``BTC-USD-220527-30000-C`` options, anything else spot.

Older Tardis ``okex*`` data is API v3 (``{"table": "spot/depth_l2_tbt", "action":
"partial"|"update", "data": [{"instrument_id", "asks", "bids", "timestamp", "checksum"}]}``,
``<type>/trade``, ``swap/funding_rate``); the same checksum applies, so it is read too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared import checksums
from shared.book import Book
from shared.exchanges._fields import entries, integer, iso_us, price_size
from shared.exchanges.base import HOUR_US, UnknownEvent, Venue, VenueRules, ms_to_us
from shared.model import BookMsg, Channel, Event, FundingMsg, RawRecord, StreamKey, TradeMsg
from shared.sequencing import INCREASING, PREV_LINK

SPOT = "okex"
SWAP = "okex-swap"
FUTURES = "okex-futures"
OPTIONS = "okex-options"


def _okx_checksum(book: Book) -> int:
    return checksums.okx(book.bids.top(checksums.OKX_DEPTH), book.asks.top(checksums.OKX_DEPTH))


RULES = (
    VenueRules(SPOT, book_rule=PREV_LINK, trade_rule=INCREASING, checksum=_okx_checksum),
    VenueRules(
        SWAP,
        book_rule=PREV_LINK,
        trade_rule=INCREASING,
        checksum=_okx_checksum,
        funding_interval_us=8 * HOUR_US,
    ),
    VenueRules(FUTURES, book_rule=PREV_LINK, trade_rule=INCREASING, checksum=_okx_checksum),
    VenueRules(OPTIONS, book_rule=PREV_LINK, trade_rule=INCREASING, checksum=_okx_checksum),
)

# Channels whose pushes are snapshot/update pairs, and those whose every push is a snapshot.
_DIFF_BOOKS = frozenset({"books", "books-l2-tbt", "books50-l2-tbt", "books-elp"})
_FULL_BOOKS = frozenset({"books5", "bbo-tbt"})
_TRADES = frozenset({"trades", "trades-all"})

# 2026-06-23T00:00:00Z: from then on OKX sends checksum 0 ("no checksum").
CHECKSUM_END_MS = 1_782_172_800_000

_V3_TYPES = {"spot": SPOT, "margin": SPOT, "swap": SWAP, "futures": FUTURES, "option": OPTIONS}


def exchange_of(inst_id: str) -> str:
    """The Tardis exchange id of an OKX instrument id."""
    parts = inst_id.split("-")
    if parts[-1] == "SWAP":
        return SWAP
    if len(parts) >= 5 and parts[-1] in ("C", "P"):
        return OPTIONS
    if len(parts) == 3 and parts[2].isdigit():
        return FUTURES
    return SPOT


def _text_field(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} is not text: {value!r}")
    return value


def _int_id(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"{what} is not an integer: {value!r}")


def _checksum(d: dict[str, Any], ts_ms: int | None) -> int | None:
    cs = d.get("checksum")
    if cs is None:
        return None
    cs = integer(cs, "checksum")
    if cs == 0 and ts_ms is not None and ts_ms >= CHECKSUM_END_MS:
        return None
    return cs


def _ms(value: Any) -> int | None:
    us = ms_to_us(value)
    return None if us is None else us // 1000


def _sniff(obj: Any) -> bool:
    if not isinstance(obj, dict):
        return False
    arg = obj.get("arg")
    if isinstance(arg, dict):
        return isinstance(arg.get("channel"), str) and ("data" in obj or "event" in obj)
    table = obj.get("table")
    return isinstance(table, str) and table.split("/", 1)[0] in _V3_TYPES and "data" in obj


class OkxSession:
    """One OKX connection's messages."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        # Book streams that have carried seqId: a later message without one is malformed.
        self.sequenced: set[StreamKey] = set()

    def parse(self, rec: RawRecord, obj: Any) -> Sequence[Event]:
        if not isinstance(obj, dict) or "event" in obj:
            return ()
        arg = obj.get("arg")
        if isinstance(arg, dict):
            channel = arg.get("channel")
            if channel in _DIFF_BOOKS or channel in _FULL_BOOKS:
                return self._books(rec, obj, arg, str(channel))
            if channel in _TRADES:
                return self._trades(rec, obj)
            if channel == "funding-rate":
                return self._funding(rec, obj)
            return ()
        table = obj.get("table")
        if isinstance(table, str):
            return self._v3(rec, obj, table)
        return ()

    # -- v5 ----------------------------------------------------------------------------

    def _books(
        self, rec: RawRecord, obj: dict[str, Any], arg: dict[str, Any], channel: str
    ) -> Sequence[Event]:
        action = obj.get("action")
        if channel in _FULL_BOOKS or action == "snapshot":
            snapshot = True
        elif action == "update":
            snapshot = False
        else:
            inst = arg.get("instId")
            key = StreamKey(exchange_of(inst), inst.upper(), Channel.BOOK) if isinstance(inst, str) else None
            raise UnknownEvent(str(action), channel, key)
        out: list[Event] = []
        for d in entries(obj):
            inst = _text_field(d.get("instId") or arg["instId"], "instId")
            key = StreamKey(exchange_of(inst), inst.upper(), Channel.BOOK)
            ts_ms = _ms(d.get("ts"))
            msg = BookMsg(
                key,
                rec.local_us,
                None if ts_ms is None else ts_ms * 1000,
                snapshot,
                price_size(d.get("bids", [])),
                price_size(d.get("asks", [])),
                rec.path,
                rec.line,
                checksum=_checksum(d, ts_ms),
                # A repeat is known by its bytes, ``ts`` included (before seqId, and for the
                # keep-alive whose ``prevSeqId == seqId``).
                raw=None if snapshot or ts_ms is None else rec.raw,
            )
            seq = d.get("seqId")
            if seq is not None:
                msg.last_id = _int_id(seq, "seqId")
                prev = d.get("prevSeqId")
                if not snapshot:
                    msg.prev_id = _int_id(prev, "prevSeqId")
                self.sequenced.add(key)
            elif key in self.sequenced:
                raise ValueError("book message without seqId on a stream that had seqIds")
            out.append(msg)
        return out

    def _trades(self, rec: RawRecord, obj: dict[str, Any]) -> Sequence[Event]:
        out: list[Event] = []
        for d in entries(obj):
            inst = _text_field(d["instId"], "instId")
            out.append(
                TradeMsg(
                    StreamKey(exchange_of(inst), inst.upper(), Channel.TRADES),
                    rec.local_us,
                    ms_to_us(d.get("ts")),
                    _int_id(d["tradeId"], "tradeId"),
                    d["px"],
                    d["sz"],
                    d.get("side"),
                    rec.path,
                    rec.line,
                )
            )
        return out

    def _funding(self, rec: RawRecord, obj: dict[str, Any]) -> Sequence[Event]:
        out: list[Event] = []
        for d in entries(obj):
            inst = _text_field(d["instId"], "instId")
            out.append(
                FundingMsg(
                    StreamKey(exchange_of(inst), inst.upper(), Channel.FUNDING),
                    rec.local_us,
                    ms_to_us(d.get("ts")),
                    ms_to_us(d.get("fundingTime")),
                    d.get("fundingRate"),
                    rec.path,
                    rec.line,
                )
            )
        return out

    # -- v3 (older Tardis data) ----------------------------------------------------------

    def _v3(self, rec: RawRecord, obj: dict[str, Any], table: str) -> Sequence[Event]:
        kind, _, name = table.partition("/")
        exchange = _V3_TYPES.get(kind)
        if exchange is None:
            return ()
        out: list[Event] = []
        if name.startswith("depth"):
            action = obj.get("action")
            if name == "depth5":
                snapshot = True
            elif action in ("partial", "update"):
                snapshot = action == "partial"
            else:
                raise ValueError(f"depth message with action {action!r}")
            for d in entries(obj):
                exch_us = iso_us(d.get("timestamp"))
                out.append(
                    BookMsg(
                        StreamKey(
                            exchange, _text_field(d["instrument_id"], "instrument_id").upper(), Channel.BOOK
                        ),
                        rec.local_us,
                        exch_us,
                        snapshot,
                        price_size(d.get("bids", [])),
                        price_size(d.get("asks", [])),
                        rec.path,
                        rec.line,
                        checksum=_checksum(d, None),
                        raw=None if snapshot or exch_us is None else rec.raw,
                    )
                )
        elif name == "trade":
            for d in entries(obj):
                out.append(
                    TradeMsg(
                        StreamKey(
                            exchange, _text_field(d["instrument_id"], "instrument_id").upper(), Channel.TRADES
                        ),
                        rec.local_us,
                        iso_us(d.get("timestamp")),
                        _int_id(d["trade_id"], "trade_id"),
                        d["price"],
                        d["size"] if "size" in d else d["qty"],
                        d.get("side"),
                        rec.path,
                        rec.line,
                    )
                )
        elif name == "funding_rate":
            for d in entries(obj):
                out.append(
                    FundingMsg(
                        StreamKey(
                            exchange,
                            _text_field(d["instrument_id"], "instrument_id").upper(),
                            Channel.FUNDING,
                        ),
                        rec.local_us,
                        None,
                        iso_us(d.get("funding_time")),
                        d.get("funding_rate"),
                        rec.path,
                        rec.line,
                    )
                )
        return out


VENUE = Venue(
    name="okx",
    url_marks=("okx.com", "okex.com"),
    file_prefixes=("OKX", "OKEX"),
    sniff=_sniff,
    session=OkxSession,
    rules=RULES,
)
