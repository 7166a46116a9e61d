"""Kraken Futures, formerly Crypto Facilities (``cryptofacilities``), WebSocket v1.

Messages carry ``feed`` and ``product_id``:

- ``book_snapshot``: ``seq``, ``timestamp`` (ms), ``bids``/``asks`` as
  ``{"price", "qty"}`` objects; ``book``: one level, ``side`` (``buy``/``sell``),
  ``price``, ``qty`` (``0`` deletes), ``seq``, ``timestamp``.  Prices and quantities are
  JSON numbers, kept as decoded.  Rule: ``seq == previous seq + 1`` per product
  (CONSECUTIVE, first = last = ``seq``); the snapshot's ``seq`` is the last one it holds.
- ``trade_snapshot`` (the recent trades, newest first) and ``trade``: ``uid`` (UUID),
  ``seq`` (consecutive per product: the trade rule checks it, and the snapshot's newest
  ``seq`` is followed by the first live trade), ``side`` (the taker's), ``qty``,
  ``price``, ``time`` (ms).  Snapshot trades are history replayed at subscription, so
  they are emitted oldest first and without a local receive time (their receive time
  says nothing about the exchange's clock).

Not parsed: ``ticker``/``ticker_lite`` (funding rates are in ``ticker`` only; no capture
to verify them), heartbeats, ``info``/``subscribed``/``alert`` events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.exchanges._fields import integer, objects, symbol_text
from shared.exchanges.base import Venue, VenueRules, ms_to_us
from shared.model import BookMsg, Channel, Event, RawRecord, StreamKey, TradeMsg
from shared.sequencing import CONSECUTIVE

EXCHANGE = "cryptofacilities"

RULES = (VenueRules(EXCHANGE, book_rule=CONSECUTIVE, trade_rule=CONSECUTIVE),)

_FEEDS = frozenset(("book", "book_snapshot", "trade", "trade_snapshot"))


def _sniff(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and obj.get("feed") in _FEEDS
        and isinstance(obj.get("product_id"), str)
        and "event" not in obj
    )


def _levels(side: Any) -> list[list[Any]]:
    return [[level["price"], level["qty"]] for level in side]


class KrakenFuturesSession:
    """One capture's worth of Kraken Futures messages (no connection state is needed)."""

    def __init__(self, url: str | None) -> None:
        self.url = url

    def parse(self, rec: RawRecord, obj: Any) -> Sequence[Event]:
        if not isinstance(obj, dict) or "event" in obj:
            return ()
        feed = obj.get("feed")
        if feed == "book":
            return self._book(rec, obj)
        if feed == "book_snapshot":
            return self._snapshot(rec, obj)
        if feed == "trade":
            return (self._trade(rec, obj, rec.local_us),)
        if feed == "trade_snapshot":
            trades = objects(obj["trades"], "trade_snapshot trades", "trade")
            ordered = sorted(trades, key=lambda t: integer(t["seq"], "seq"))
            return [self._trade(rec, t, None, obj["product_id"]) for t in ordered]
        return ()

    def _book(self, rec: RawRecord, d: dict[str, Any]) -> Sequence[Event]:
        seq = integer(d["seq"], "seq")
        side = d["side"]
        level = [[d["price"], d["qty"]]]
        if side == "buy":
            bids, asks = level, []
        elif side == "sell":
            bids, asks = [], level
        else:
            raise ValueError(f"unknown book side {side!r}")
        return (
            BookMsg(
                StreamKey(EXCHANGE, symbol_text(d["product_id"]), Channel.BOOK),
                rec.local_us,
                ms_to_us(d.get("timestamp")),
                False,
                bids,
                asks,
                rec.path,
                rec.line,
                first_id=seq,
                last_id=seq,
            ),
        )

    def _snapshot(self, rec: RawRecord, d: dict[str, Any]) -> Sequence[Event]:
        return (
            BookMsg(
                StreamKey(EXCHANGE, symbol_text(d["product_id"]), Channel.BOOK),
                rec.local_us,
                ms_to_us(d.get("timestamp")),
                True,
                _levels(d["bids"]),
                _levels(d["asks"]),
                rec.path,
                rec.line,
                last_id=integer(d["seq"], "seq"),
            ),
        )

    def _trade(
        self, rec: RawRecord, t: dict[str, Any], local_us: int | None, product: Any = None
    ) -> TradeMsg:
        side = t.get("side")
        return TradeMsg(
            StreamKey(EXCHANGE, symbol_text(t.get("product_id") or product), Channel.TRADES),
            local_us,
            ms_to_us(t.get("time")),
            integer(t["seq"], "seq"),
            t["price"],
            t["qty"],
            side if isinstance(side, str) else None,
            rec.path,
            rec.line,
        )


VENUE = Venue(
    name="krakenfutures",
    url_marks=("futures.kraken.com", "cryptofacilities.com"),
    file_prefixes=("KRAKEN_FUTURES", "CRYPTOFACILITIES"),
    sniff=_sniff,
    session=KrakenFuturesSession,
    rules=RULES,
)
