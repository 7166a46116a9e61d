"""Kraken spot (Tardis id ``kraken``): WS v1, WS v2 and the REST trades answer.

- WS v1 books: ``[channelID, {"as": [...], "bs": [...]}, "book-N", "PAIR"]`` snapshots and
  ``[channelID, {"a": [...]} (, {"b": [...]}), "book-N", "PAIR"]`` updates whose last dict
  carries ``"c"``, the CRC-32 (decimal text, unsigned) of the top 10 after the update.
  Levels ``[price, volume, timestamp(, "r")]``; volume 0 deletes.  Kraken sends no delete
  for a level pushed out of the subscribed depth N, so every message carries ``depth=N``
  and the book is trimmed to it.  There are no sequence ids: the checksum is the only guard,
  and a byte-identical repeat of an update (every level carries its time) is a duplicate.
- WS v1 trades: ``[channelID, [[price, volume, time, side, type, misc], ...], "trade", "PAIR"]``
  (no trade id: a repeated message's trades are duplicates, known by the message's bytes and
  their place in it).
- WS v2: ``{"channel": "book", "type": "snapshot"|"update", "data": [{"symbol", "bids":
  [{"price", "qty"}], "asks", "checksum"}]}`` with numbers as JSON numbers: the message is
  decoded again keeping every number's exact text (trailing zeros matter to the checksum).
  The depth comes from the subscription answer (default 10); an update with a ``timestamp``
  is known by its bytes, as on v1.  ``trade`` channel with ``trade_id``.
- REST ``/0/public/Trades``: ``{"error": [], "result": {"XBTUSDT": [[price, volume, time,
  side, type, misc, trade_id], ...], "last": ...}}``: trade ids per pair are consecutive.

Symbols as Kraken writes them, upper case: ``XBT/USD`` on the websockets, the REST pair
name (``XBTUSDT``) for REST trades, so the two are different streams.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared import checksums
from shared.book import Book
from shared.exchanges._fields import entries, exact_json, number_text, optional_integer, price_size
from shared.exchanges.base import Venue, VenueRules, seconds_to_us
from shared.formats.timestamps import iso_to_us
from shared.model import BookMsg, Channel, Event, RawRecord, StreamKey, TradeMsg
from shared.sequencing import CONSECUTIVE, NONE

EXCHANGE = "kraken"
V2_DEFAULT_DEPTH = 10


def _kraken_checksum(book: Book) -> int:
    return checksums.kraken(book.bids.top(checksums.KRAKEN_DEPTH), book.asks.top(checksums.KRAKEN_DEPTH))


RULES = (VenueRules(EXCHANGE, book_rule=NONE, trade_rule=CONSECUTIVE, checksum=_kraken_checksum),)

_V1_EVENTS = frozenset({"heartbeat", "systemStatus", "subscriptionStatus", "pong"})
_V2_CHANNELS = frozenset({"book", "trade", "heartbeat", "status", "ticker", "ohlc", "instrument", "level3"})
_PRIVATE = frozenset({"ownTrades", "openOrders"})
_SIDES = {"b": "buy", "s": "sell", "buy": "buy", "sell": "sell"}


def _sniff(obj: Any) -> bool:
    if isinstance(obj, list):
        return (
            len(obj) >= 4
            and isinstance(obj[0], int)
            and isinstance(obj[-1], str)
            and isinstance(obj[-2], str)
            and isinstance(obj[1], (dict, list))
        )
    if not isinstance(obj, dict):
        return False
    if obj.get("event") in _V1_EVENTS:
        return True
    if obj.get("channel") in _V2_CHANNELS and "market" not in obj and ("data" in obj or "type" in obj):
        return True
    return isinstance(obj.get("error"), list) and isinstance(obj.get("result"), dict)


def _row(row: Any, size: int) -> list[Any]:
    if not isinstance(row, list) or len(row) < size:
        raise ValueError(f"trade row of the wrong shape: {row!r}")
    return row


def _depth(channel_name: str) -> int | None:
    _, _, n = channel_name.partition("-")
    return int(n) if n.isdigit() else None


class KrakenSession:
    """One Kraken connection (or REST answer)."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.v2_depth: dict[str, int] = {}
        self.v2_last_trade: dict[str, int] = {}

    def parse(self, rec: RawRecord, obj: Any) -> Sequence[Event]:
        if isinstance(obj, list):
            if len(obj) >= 2 and isinstance(obj[1], str) and obj[1] in _PRIVATE:
                return ()  # [[...], "ownTrades", {"sequence": n}]: account data, not market data
            if len(obj) < 4 or not isinstance(obj[-2], str) or not isinstance(obj[-1], str):
                raise ValueError("Kraken v1 data message without channel name and pair")
            name = obj[-2]
            if name.startswith("book"):
                return self._v1_book(rec, obj, name)
            if name == "trade":
                return self._v1_trades(rec, obj)
            return ()
        if not isinstance(obj, dict):
            return ()
        if "event" in obj:
            return ()
        if "method" in obj:
            self._v2_ack(obj)
            return ()
        channel = obj.get("channel")
        if channel == "book":
            return self._v2_book(rec)
        if channel == "trade":
            return self._v2_trades(rec)
        if isinstance(obj.get("error"), list) and isinstance(obj.get("result"), dict):
            return self._rest_trades(rec, obj)
        return ()

    # -- v1 ----------------------------------------------------------------------------

    def _v1_book(self, rec: RawRecord, obj: list[Any], name: str) -> Sequence[Event]:
        key = StreamKey(EXCHANGE, obj[-1].upper(), Channel.BOOK)
        depth = _depth(name)
        parts = obj[1:-2]
        if not parts or not all(isinstance(p, dict) for p in parts):
            raise TypeError("Kraken book message without level objects")
        if any("as" in p or "bs" in p for p in parts):
            bids: list[Any] = []
            asks: list[Any] = []
            for p in parts:
                bids += price_size(p.get("bs", []))
                asks += price_size(p.get("as", []))
            return (BookMsg(key, rec.local_us, None, True, bids, asks, rec.path, rec.line, depth=depth),)
        bids = []
        asks = []
        checksum: int | None = None
        exch_us: int | None = None
        for p in parts:
            for side, out in (("b", bids), ("a", asks)):
                levels = p.get(side)
                if levels is None:
                    continue
                out += price_size(levels)
                for lv in levels:
                    # The newest level time is the update's time (republished levels keep theirs).
                    if isinstance(lv, list) and len(lv) == 3:
                        t = seconds_to_us(lv[2])
                        if t is not None and (exch_us is None or t > exch_us):
                            exch_us = t
            if "c" in p:
                checksum = int(p["c"])
        return (
            BookMsg(
                key,
                rec.local_us,
                exch_us,
                False,
                bids,
                asks,
                rec.path,
                rec.line,
                checksum=checksum,
                depth=depth,
                # No ids: a repeat is known by its bytes, which hold every level's time.
                raw=rec.raw,
            ),
        )

    def _v1_trades(self, rec: RawRecord, obj: list[Any]) -> Sequence[Event]:
        key = StreamKey(EXCHANGE, obj[-1].upper(), Channel.TRADES)
        trades = obj[1]
        if not isinstance(trades, list):
            raise TypeError("Kraken trade message without a trade list")
        rows = [_row(t, 4) for t in trades]
        # No trade ids: a trade is known by its message's bytes (its time among them) and its
        # place in the message (one order filling two makers can give two identical rows).
        return [
            TradeMsg(
                key,
                rec.local_us,
                seconds_to_us(t[2]),
                None,
                t[0],
                t[1],
                _SIDES.get(t[3]),
                rec.path,
                rec.line,
                raw=b"%d:%b" % (i, rec.raw),
            )
            for i, t in enumerate(rows)
        ]

    # -- v2 ----------------------------------------------------------------------------

    def _v2_ack(self, obj: dict[str, Any]) -> None:
        result = obj.get("result")
        if obj.get("method") == "subscribe" and obj.get("success") and isinstance(result, dict):
            depth = result.get("depth")
            symbol = result.get("symbol")
            if result.get("channel") == "book" and isinstance(depth, int) and isinstance(symbol, str):
                self.v2_depth[symbol.upper()] = depth

    def _v2_book(self, rec: RawRecord) -> Sequence[Event]:
        obj = exact_json(rec.raw)
        kind = obj.get("type")
        if kind not in ("snapshot", "update"):
            raise ValueError(f"Kraken v2 book message of type {kind!r}")
        out: list[Event] = []
        for d in entries(obj):
            symbol = d["symbol"].upper()
            cs = optional_integer(d.get("checksum"), "checksum")
            ts = d.get("timestamp")
            out.append(
                BookMsg(
                    StreamKey(EXCHANGE, symbol, Channel.BOOK),
                    rec.local_us,
                    iso_to_us(ts.encode("ascii")) if isinstance(ts, str) else None,
                    kind == "snapshot",
                    [[number_text(lv["price"]), number_text(lv["qty"])] for lv in d.get("bids", [])],
                    [[number_text(lv["price"]), number_text(lv["qty"])] for lv in d.get("asks", [])],
                    rec.path,
                    rec.line,
                    checksum=cs,
                    depth=self.v2_depth.get(symbol, V2_DEFAULT_DEPTH),
                    raw=rec.raw if kind == "update" and isinstance(ts, str) else None,
                )
            )
        return out

    def _v2_trades(self, rec: RawRecord) -> Sequence[Event]:
        obj = exact_json(rec.raw)
        snapshot = obj.get("type") == "snapshot"
        out: list[Event] = []
        for d in sorted(entries(obj), key=lambda d: int(d["trade_id"])):
            symbol = d["symbol"].upper()
            trade_id = int(d["trade_id"])
            last = self.v2_last_trade.get(symbol)
            # A snapshot on (re)subscription repeats recent trades: only the new ones are events.
            if snapshot and last is not None and trade_id <= last:
                continue
            if last is None or trade_id > last:
                self.v2_last_trade[symbol] = trade_id
            ts = d.get("timestamp")
            out.append(
                TradeMsg(
                    StreamKey(EXCHANGE, symbol, Channel.TRADES),
                    # A snapshot's trades are history, not received live: no receive time.
                    None if snapshot else rec.local_us,
                    iso_to_us(ts.encode("ascii")) if isinstance(ts, str) else None,
                    trade_id,
                    number_text(d["price"]),
                    number_text(d["qty"]),
                    _SIDES.get(str(d.get("side"))),
                    rec.path,
                    rec.line,
                )
            )
        return out

    # -- REST ----------------------------------------------------------------------------

    def _rest_trades(self, rec: RawRecord, obj: dict[str, Any]) -> Sequence[Event]:
        result = obj["result"]
        pairs = [k for k, v in result.items() if k != "last" and isinstance(v, list)]
        if not pairs or "last" not in result:
            return ()  # another REST answer (asset pairs, depth, ...)
        exact = exact_json(rec.raw)["result"]  # trade times are JSON floats: keep their text
        # These trades are history fetched at once, not received live: no receive time.
        out: list[Event] = []
        for pair in pairs:
            key = StreamKey(EXCHANGE, pair.upper(), Channel.TRADES)
            for t in exact[pair]:
                trade_id = _row(t, 7)[6]
                if isinstance(trade_id, bool) or not isinstance(trade_id, int):
                    raise ValueError(f"REST trade without an integer id: {trade_id!r}")
                out.append(
                    TradeMsg(
                        key,
                        None,
                        seconds_to_us(t[2]),
                        trade_id,
                        t[0],
                        t[1],
                        _SIDES.get(t[3]),
                        rec.path,
                        rec.line,
                    )
                )
        return out


VENUE = Venue(
    name="kraken",
    url_marks=("ws.kraken.com", "ws-auth.kraken.com", "api.kraken.com", "beta-ws.kraken.com"),
    file_prefixes=("KRAKEN",),
    sniff=_sniff,
    session=KrakenSession,
    rules=RULES,
)
