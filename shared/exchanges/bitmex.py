"""BitMEX (``bitmex``), ``/realtime`` WebSocket.

Messages: ``{"table", "action", "data": [rows]}`` (``partial`` also has ``keys``,
``filter``...).

- ``orderBookL2`` / ``orderBookL2_25``: rows ``{"symbol", "id", "side", "size",
  "price"}`` keyed by ``id``.  ``partial`` is the snapshot; ``insert``/``update``/
  ``delete`` change levels.  ``update`` and ``delete`` rows may lack ``price``: the session
  keeps, per symbol, the id -> price map of the levels it has seen, and translates every
  row to a ``[price, size]`` level (``delete`` -> size ``0``).  A row whose id was never
  seen gets the price ``"id:<id>"``, which the book reports as an invalid level (the book
  is then unsafe until the next partial).  A ``delete`` of an id deleted before (a repeated
  message) takes the price the id had, so it deletes nothing instead of being invalid.  One
  message may hold rows of several symbols: it becomes one event per symbol.  No sequence
  numbers: rule NONE.  ``exch_us`` is the rows' latest ``timestamp`` when they carry one
  (newer API versions), else unknown.  ``BookMsg.raw`` is set only with that time: without
  it, a level deleted, re-inserted and deleted again repeats the same bytes (seen in real
  captures), and the contract's duplicate needs the same exchange time, so identical bytes
  are not a duplicate there; a repeated message is applied again, which changes nothing.
- ``trade``: rows with ``trdMatchID`` (UUID: only duplicates can be found, rule NONE),
  ``side`` (the taker's), ``size``, ``price``, ``timestamp``.  The ``partial`` of the
  trade table replays the last trade(s): emitted without a local receive time.

Not parsed: ``quote``, ``orderBook10`` (top-10 snapshots), ``instrument``, ``funding``,
``info``/``subscribe`` answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.exchanges._fields import buy_sell, iso_us, lower, objects, opaque_trade_id, symbol_text
from shared.exchanges.base import Venue, VenueRules
from shared.model import BookMsg, Channel, Event, RawRecord, StreamKey, TradeMsg
from shared.sequencing import NONE

EXCHANGE = "bitmex"

RULES = (VenueRules(EXCHANGE, book_rule=NONE, trade_rule=NONE),)

_BOOK_TABLES = frozenset(("orderBookL2", "orderBookL2_25"))
# Deleted ids whose price is remembered, per symbol.
DELETED_KEEP = 4096
_ACTIONS = frozenset(("partial", "insert", "update", "delete"))


def _sniff(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and (obj.get("table") in _BOOK_TABLES or obj.get("table") == "trade")
        and obj.get("action") in _ACTIONS
        and isinstance(obj.get("data"), list)
    )


class _Group:
    """The levels of one symbol inside one message."""

    __slots__ = ("exch_us", "sides")

    def __init__(self) -> None:
        self.sides: tuple[list[Any], list[Any]] = ([], [])
        self.exch_us: int | None = None


class BitmexSession:
    """One connection of BitMEX messages: holds the id -> price map of every book."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.prices: dict[str, dict[Any, Any]] = {}
        # Per symbol, the price of ids deleted lately (oldest first), for a repeated delete.
        self.deleted: dict[str, dict[Any, Any]] = {}

    def parse(self, rec: RawRecord, obj: Any) -> Sequence[Event]:
        if not isinstance(obj, dict):
            return ()
        table = obj.get("table")
        if table in _BOOK_TABLES:
            return self._book(rec, obj)
        if table == "trade":
            return self._trades(rec, obj)
        return ()

    def _book(self, rec: RawRecord, obj: dict[str, Any]) -> Sequence[Event]:
        action = obj.get("action")
        if action not in _ACTIONS:
            raise ValueError(f"order book action {action!r}")
        rows = objects(obj["data"], "order book data", "order book row")
        groups: dict[str, _Group] = {}
        partial = action == "partial"
        if partial:
            # A partial resets the books it covers, even when they are empty.
            flt = obj.get("filter")
            if isinstance(flt, dict) and isinstance(flt.get("symbol"), str):
                groups[flt["symbol"].upper()] = _Group()
        # id -> price changes of this message (None: deleted), kept apart until every row
        # has been read, so a malformed message leaves the maps as they were.
        staged: dict[str, dict[Any, Any]] = {}
        for row in rows:
            symbol = symbol_text(row["symbol"])
            group = groups.get(symbol)
            if group is None:
                group = groups[symbol] = _Group()
            changes = staged.get(symbol)
            if changes is None:
                changes = staged[symbol] = {}
            level_id = row["id"]
            price = row.get("price")
            if price is None:
                price = (
                    changes.get(level_id) if level_id in changes else self._price(symbol, level_id, partial)
                )
                if price is None and action == "delete":
                    price = self.deleted.get(symbol, {}).get(level_id)
                if price is None:
                    price = f"id:{level_id}"  # never seen: the book reports the level invalid
            if action == "delete":
                changes[level_id] = None
                size: Any = 0
            else:
                changes[level_id] = price
                size = row["size"]
            group.sides[buy_sell(row)].append([price, size])
            ts = iso_us(row.get("timestamp"))
            if ts is not None and (group.exch_us is None or ts > group.exch_us):
                group.exch_us = ts
        for symbol in groups:
            changes = staged.get(symbol, {})
            if partial:
                self.prices[symbol] = {i: p for i, p in changes.items() if p is not None}
                self.deleted[symbol] = {}
                continue
            prices = self.prices.setdefault(symbol, {})
            deleted = self.deleted.setdefault(symbol, {})
            for level_id, price in changes.items():
                if price is None:
                    gone = prices.pop(level_id, None)
                    if gone is not None:
                        deleted[level_id] = gone
                        if len(deleted) > DELETED_KEEP:
                            del deleted[next(iter(deleted))]
                else:
                    prices[level_id] = price
                    deleted.pop(level_id, None)
        return [
            BookMsg(
                StreamKey(EXCHANGE, symbol, Channel.BOOK),
                rec.local_us,
                group.exch_us,
                partial,
                group.sides[0],
                group.sides[1],
                rec.path,
                rec.line,
                raw=None if partial or group.exch_us is None else rec.raw,
            )
            for symbol, group in groups.items()
        ]

    def _price(self, symbol: str, level_id: Any, partial: bool) -> Any:
        if partial:
            return None
        prices = self.prices.get(symbol)
        return None if prices is None else prices.get(level_id)

    def _trades(self, rec: RawRecord, obj: dict[str, Any]) -> Sequence[Event]:
        action = obj.get("action")
        if action not in ("partial", "insert"):
            return ()
        rows = objects(obj["data"], "trade data", "trade row")
        local = None if action == "partial" else rec.local_us
        out: list[Event] = []
        for t in rows:
            out.append(
                TradeMsg(
                    StreamKey(EXCHANGE, symbol_text(t["symbol"]), Channel.TRADES),
                    local,
                    iso_us(t.get("timestamp")),
                    opaque_trade_id(t["trdMatchID"]),
                    t["price"],
                    t["size"],
                    lower(t.get("side")),
                    rec.path,
                    rec.line,
                )
            )
        return out


VENUE = Venue(
    name="bitmex",
    url_marks=("bitmex.com",),
    file_prefixes=("BITMEX",),
    sniff=_sniff,
    session=BitmexSession,
    rules=RULES,
)
