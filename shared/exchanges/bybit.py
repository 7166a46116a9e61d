"""Bybit derivatives (``bybit``), spot (``bybit-spot``) and options (``bybit-options``).

Two public WebSocket generations share the ``topic`` envelope:

- **v5** (``/v5/public/...``, and Bybit's historical ``ob500`` downloads):
  ``{"topic": "orderbook.<depth>.<SYM>", "type": "snapshot"|"delta", "ts",
  "data": {"s", "b", "a", "u", "seq"}, "cts"}``.  Levels are ``[price, size]`` texts,
  size ``"0"`` deletes.  Rule: ``u == previous u + 1`` (CONSECUTIVE, first = last = ``u``).
  A ``snapshot`` resets the book; a delta with ``u == 1`` is a full snapshot sent after
  a service restart (``BookMsg.reset``).  Levels leaving the ``<depth>`` window are
  deleted by the exchange (size ``"0"``; checked on real ``ob500`` data): no trimming.
  Trades: ``publicTrade.<SYM>``, ``data`` a list of
  ``{"T", "s", "S", "v", "p", "i"}``; ``i`` is a UUID (spot: a number as text), so only
  duplicates can be found (trade rule NONE).
- **v2** (``realtime`` / ``realtime_public``, 2019-2022): ``orderBookL2_25.<SYM>`` and
  ``orderBook_200.100ms.<SYM>``; a ``snapshot`` (``data`` a list of rows, or
  ``{"order_book": rows}`` on USDT contracts) and ``delta`` messages
  (``data: {"delete", "update", "insert"}``) whose rows are ``{"price", "side", "size",
  "id", "symbol"}``, keyed by ``id``; ``delete`` rows become size ``0``.  Rows that lack
  a price take it from the ``id`` seen before.  ``cross_seq`` grows but not
  contiguously, and the exchange id ``bybit`` already carries the v5 rule, so v2 book
  messages carry **no ids**: continuity is not checked on v2 (values, crossing and
  snapshot comparison still are).  ``BookMsg.raw`` is set (each message is unique by its
  ``cross_seq``), but the auditor only looks at it for streams whose rule has no ids.
  Trades: ``trade.<SYM>`` rows with UUID ``trade_id``.

Funding (``tickers.<SYM>``, whose deltas carry only changed fields) is not parsed yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.exchanges._fields import as_dict, buy_sell, integer, lower, objects, opaque_trade_id, symbol_text
from shared.exchanges.base import UnknownEvent, Venue, VenueRules, ms_to_us
from shared.model import BookMsg, Channel, Event, RawRecord, StreamKey, TradeMsg
from shared.sequencing import CONSECUTIVE, NONE

DERIVATIVES = "bybit"
SPOT = "bybit-spot"
OPTIONS = "bybit-options"

RULES = (
    VenueRules(DERIVATIVES, book_rule=CONSECUTIVE, trade_rule=NONE),
    VenueRules(SPOT, book_rule=CONSECUTIVE, trade_rule=NONE),
    VenueRules(OPTIONS, book_rule=CONSECUTIVE, trade_rule=NONE),
)

_V5_PREFIXES = ("orderbook.", "publicTrade.")
_V2_PREFIXES = ("orderBookL2_25.", "orderBook_200.", "trade.")
# Trade row fields: symbol, time (ms), id, price, size, side.
_V5_TRADE = ("s", "T", "i", "p", "v", "S")
_V2_TRADE = ("symbol", "trade_time_ms", "trade_id", "price", "size", "side")


def exchange_from_url(url: str | None) -> str:
    if url:
        if "/v5/public/spot" in url or "stream.bybit.com/spot" in url:
            return SPOT
        if "/v5/public/option" in url:
            return OPTIONS
    return DERIVATIVES


def _sniff(obj: Any) -> bool:
    if not isinstance(obj, dict) or "data" not in obj:
        return False
    topic = obj.get("topic")
    return isinstance(topic, str) and topic.startswith(_V5_PREFIXES + _V2_PREFIXES)


class BybitSession:
    """One capture (connection) of Bybit messages; v2 books need the id -> price maps."""

    def __init__(self, url: str | None) -> None:
        self.exchange = exchange_from_url(url)
        # v2: per symbol, level id -> price text, to price rows that come without one.
        self.prices: dict[str, dict[Any, Any]] = {}

    def parse(self, rec: RawRecord, obj: Any) -> Sequence[Event]:
        if not isinstance(obj, dict):
            return ()
        topic = obj.get("topic")
        if not isinstance(topic, str):
            return ()  # subscription answers, pongs
        if topic.startswith("orderbook."):
            return self._v5_book(rec, obj, topic)
        if topic.startswith("publicTrade."):
            return self._trades(rec, obj["data"], "publicTrade", _V5_TRADE)
        if topic.startswith(("orderBookL2_25.", "orderBook_200.")):
            return self._v2_book(rec, obj, topic)
        if topic.startswith("trade."):
            return self._trades(rec, obj["data"], "trade", _V2_TRADE)
        return ()

    # -- v5 --------------------------------------------------------------------------

    def _v5_book(self, rec: RawRecord, obj: dict[str, Any], topic: str) -> Sequence[Event]:
        d = obj["data"]
        kind = obj.get("type")
        if kind not in ("snapshot", "delta"):
            raise UnknownEvent(str(kind), topic)
        u = integer(d["u"], "u")
        bids, asks = d["b"], d["a"]
        if not isinstance(bids, list) or not isinstance(asks, list):
            raise ValueError("order book sides are not lists")
        snapshot = kind == "snapshot"
        return (
            BookMsg(
                StreamKey(self.exchange, symbol_text(d["s"]), Channel.BOOK),
                rec.local_us,
                ms_to_us(obj.get("ts")),
                snapshot,
                bids,
                asks,
                rec.path,
                rec.line,
                first_id=u,
                last_id=u,
                reset=not snapshot and u == 1,
            ),
        )

    # -- v2 --------------------------------------------------------------------------

    def _v2_book(self, rec: RawRecord, obj: dict[str, Any], topic: str) -> Sequence[Event]:
        symbol = topic.rsplit(".", 1)[1].upper()
        data = obj["data"]
        kind = obj.get("type")
        exch_us = _e6_to_us(obj.get("timestamp_e6"))
        if kind == "snapshot":
            rows = data["order_book"] if isinstance(data, dict) else data
            if not isinstance(rows, list):
                raise ValueError("snapshot rows are not a list")
            fresh: dict[Any, Any] = {}
            sides: tuple[list[Any], list[Any]] = ([], [])
            for row in rows:
                fresh[row["id"]] = row["price"]
                sides[buy_sell(row)].append([row["price"], row["size"]])
            self.prices[symbol] = fresh
            return (self._v2_msg(rec, symbol, exch_us, True, sides),)
        if kind != "delta":
            raise ValueError(f"order book message of type {kind!r}")
        data = as_dict(data, "delta data")
        prices = self.prices.get(symbol, {})
        # id -> price changes of this message (None: deleted), applied to the map only once
        # every row has been read, so a malformed message leaves the map as it was.
        changes: dict[Any, Any] = {}
        sides = ([], [])
        for action in ("delete", "update", "insert"):
            for row in data.get(action) or ():
                level_id = row["id"]
                price = row.get("price")
                if price is None:
                    price = changes[level_id] if level_id in changes else prices.get(level_id)
                    if price is None:
                        price = f"id:{level_id}"  # never seen: the book reports the level invalid
                if action == "delete":
                    changes[level_id] = None
                    sides[buy_sell(row)].append([price, 0])
                else:
                    changes[level_id] = price
                    sides[buy_sell(row)].append([price, row["size"]])
        if changes:
            kept = self.prices.setdefault(symbol, {})
            for level_id, price in changes.items():
                if price is None:
                    kept.pop(level_id, None)
                else:
                    kept[level_id] = price
        return (self._v2_msg(rec, symbol, exch_us, False, sides),)

    def _v2_msg(
        self,
        rec: RawRecord,
        symbol: str,
        exch_us: int | None,
        snapshot: bool,
        sides: tuple[list[Any], list[Any]],
    ) -> BookMsg:
        return BookMsg(
            StreamKey(self.exchange, symbol, Channel.BOOK),
            rec.local_us,
            exch_us,
            snapshot,
            sides[0],
            sides[1],
            rec.path,
            rec.line,
            raw=rec.raw,
        )

    # -- trades (v5 and v2) ------------------------------------------------------------

    def _trades(self, rec: RawRecord, data: Any, what: str, fields: tuple[str, ...]) -> Sequence[Event]:
        rows = objects(data, f"{what} data", "trade")
        sym, time, tid, price, size, side = fields
        out: list[Event] = []
        for t in rows:
            out.append(
                TradeMsg(
                    StreamKey(self.exchange, symbol_text(t[sym]), Channel.TRADES),
                    rec.local_us,
                    ms_to_us(t.get(time)),
                    opaque_trade_id(t[tid]),
                    t[price],
                    t[size],
                    lower(t.get(side)),
                    rec.path,
                    rec.line,
                )
            )
        return out


def _e6_to_us(value: Any) -> int | None:
    """``timestamp_e6`` (microseconds, number or text) to int."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


VENUE = Venue(
    name="bybit",
    url_marks=("bybit.com", "bytick.com"),
    file_prefixes=("BYBIT",),
    sniff=_sniff,
    session=BybitSession,
    rules=RULES,
)
