"""Coinbase Exchange, formerly Coinbase Pro (``coinbase``), WebSocket feed.

Messages carry ``type`` and ``product_id``:

- ``snapshot``: ``bids``/``asks`` as ``[price, size]`` texts; ``l2update``: ``changes``
  as ``[side, price, size]`` (``buy``/``sell``, size ``"0"`` deletes) and ``time``
  (ISO-8601).  The ``level2`` channel has **no sequence numbers** (rule NONE): continuity
  cannot be checked, only values and crossing; byte-identical repeats are duplicates
  (``BookMsg.raw``; ``time`` has microseconds, so real repeats are rare).
- ``match`` and ``last_match`` (the last trade before subscribing): ``trade_id``
  (consecutive per product: CONSECUTIVE), ``price``, ``size``, ``time`` and ``side``,
  which is the *maker's* side; the event's side is the taker's, the opposite.
  ``last_match`` is history replayed at subscription: it has no local receive time.

Not parsed: ``ticker`` (it repeats the last match), ``heartbeat``, ``subscriptions``,
``error``, and the Advanced Trade API's ``l2_data``/``market_trades`` channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.exchanges._fields import integer, iso_us, symbol_text
from shared.exchanges.base import Venue, VenueRules
from shared.model import BookMsg, Channel, Event, RawRecord, StreamKey, TradeMsg
from shared.sequencing import CONSECUTIVE, NONE

EXCHANGE = "coinbase"

RULES = (VenueRules(EXCHANGE, book_rule=NONE, trade_rule=CONSECUTIVE),)

_TYPES = frozenset(("snapshot", "l2update", "match", "last_match"))
_TAKER = {"buy": "sell", "sell": "buy"}


def _sniff(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("type") in _TYPES and isinstance(obj.get("product_id"), str)


class CoinbaseSession:
    """One capture's worth of Coinbase messages (no connection state is needed)."""

    def __init__(self, url: str | None) -> None:
        self.url = url

    def parse(self, rec: RawRecord, obj: Any) -> Sequence[Event]:
        if not isinstance(obj, dict):
            return ()
        kind = obj.get("type")
        if kind == "l2update":
            return self._update(rec, obj)
        if kind == "snapshot":
            return self._snapshot(rec, obj)
        if kind == "match" or kind == "last_match":
            return self._match(rec, obj, kind == "last_match")
        return ()

    def _snapshot(self, rec: RawRecord, d: dict[str, Any]) -> Sequence[Event]:
        bids, asks = d["bids"], d["asks"]
        if not isinstance(bids, list) or not isinstance(asks, list):
            raise ValueError("snapshot sides are not lists")
        return self._book(rec, d, True, bids, asks)

    def _update(self, rec: RawRecord, d: dict[str, Any]) -> Sequence[Event]:
        bids: list[Any] = []
        asks: list[Any] = []
        for side, price, size in d["changes"]:
            if side == "buy":
                bids.append([price, size])
            elif side == "sell":
                asks.append([price, size])
            else:
                raise ValueError(f"unknown l2update side {side!r}")
        return self._book(rec, d, False, bids, asks)

    def _book(
        self, rec: RawRecord, d: dict[str, Any], snapshot: bool, bids: list[Any], asks: list[Any]
    ) -> Sequence[Event]:
        # Updates are unique by their bytes (``time`` has microseconds): repeats are duplicates.
        # Without ``time`` the bytes cannot tell a repeat from the same change made again.
        return (
            BookMsg(
                StreamKey(EXCHANGE, symbol_text(d["product_id"]), Channel.BOOK),
                rec.local_us,
                iso_us(d.get("time")),
                snapshot,
                bids,
                asks,
                rec.path,
                rec.line,
                raw=None if snapshot or d.get("time") is None else rec.raw,
            ),
        )

    def _match(self, rec: RawRecord, d: dict[str, Any], history: bool) -> Sequence[Event]:
        trade_id = integer(d["trade_id"], "trade_id")
        maker = d.get("side")
        return (
            TradeMsg(
                StreamKey(EXCHANGE, symbol_text(d["product_id"]), Channel.TRADES),
                None if history else rec.local_us,
                iso_us(d.get("time")),
                trade_id,
                d["price"],
                d["size"],
                _TAKER.get(maker) if isinstance(maker, str) else None,
                rec.path,
                rec.line,
            ),
        )


VENUE = Venue(
    name="coinbase",
    url_marks=("coinbase.com", "gdax.com"),
    file_prefixes=("COINBASE", "COINBASE_PRO", "GDAX"),
    sniff=_sniff,
    session=CoinbaseSession,
    rules=RULES,
)
