"""FTX (Tardis ids ``ftx``, ``ftx-us``; ``ftx-tr`` for FTX Turkey, which Tardis does not carry).

- ``{"channel": "orderbook", "market", "type": "partial"|"update", "data": {"time",
  "checksum", "bids", "asks", "action"}}``: ``partial`` resets the book; levels ``[price,
  size]`` are JSON floats, kept as the floats they are (FTX's checksum is defined over their
  Python repr, which is also the text FTX wrote); size 0 deletes.  No sequence ids: the
  checksum (CRC-32 of the top 100, unsigned) is the only guard, and a byte-identical
  repeat of an update (same ``time``) is a duplicate (``BookMsg.raw``).
- ``{"channel": "trades", "market", "type": "update", "data": [{"id", "price", "size",
  "side", "liquidation", "time"}]}``: ids increase but are shared by all markets, so they are
  not contiguous within one.

The exchange id comes from the connection URL: ``ftx.us`` is ``ftx-us``.  FTX Turkey
(``ftxtr.com``, cryptofeed ``FTX_TR``) ran FTX's engine and API but has no Tardis id of its
own; its markets share names with FTX.com's (``ETH/USD``), so reporting it as ``ftx`` would
merge two venues' books into one stream.  It is ``ftx-tr``, with FTX's rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared import checksums
from shared.book import Book
from shared.exchanges._fields import iso_us, level_list, optional_integer
from shared.exchanges.base import Venue, VenueRules, seconds_to_us
from shared.model import BookMsg, Channel, Event, RawRecord, StreamKey, TradeMsg
from shared.numbers import as_text
from shared.sequencing import INCREASING, NONE

FTX = "ftx"
FTX_US = "ftx-us"
FTX_TR = "ftx-tr"


def _ftx_checksum(book: Book) -> int:
    return checksums.ftx(book.bids.top(checksums.FTX_DEPTH), book.asks.top(checksums.FTX_DEPTH))


RULES = (
    VenueRules(FTX, book_rule=NONE, trade_rule=INCREASING, checksum=_ftx_checksum),
    VenueRules(FTX_US, book_rule=NONE, trade_rule=INCREASING, checksum=_ftx_checksum),
    VenueRules(FTX_TR, book_rule=NONE, trade_rule=INCREASING, checksum=_ftx_checksum),
)

_CHANNELS = frozenset({"orderbook", "trades", "ticker", "markets", "orderbookGrouped", "fills", "orders"})


def exchange_from_url(url: str | None) -> str:
    if url and "ftx.us" in url:
        return FTX_US
    if url and "ftxtr" in url:
        return FTX_TR
    return FTX


def _sniff(obj: Any) -> bool:
    if not isinstance(obj, dict):
        return False
    return obj.get("channel") in _CHANNELS and isinstance(obj.get("type"), str) and "method" not in obj


def _market(obj: dict[str, Any]) -> str:
    market = obj["market"]
    if not isinstance(market, str):
        raise TypeError(f"market is not text: {market!r}")
    return market.upper()


def _iso_us(value: Any) -> int | None:
    """``2021-07-22T22:45:25.101992+00:00`` to epoch microseconds (None when unreadable)."""
    if isinstance(value, str) and value.endswith("+00:00"):
        value = value[:-6] + "Z"
    return iso_us(value)


class FtxSession:
    """One FTX connection."""

    def __init__(self, url: str | None) -> None:
        self.exchange = exchange_from_url(url)

    def parse(self, rec: RawRecord, obj: Any) -> Sequence[Event]:
        if not isinstance(obj, dict):
            return ()
        channel = obj.get("channel")
        kind = obj.get("type")
        if kind not in ("partial", "update"):
            return ()  # subscribed, unsubscribed, info, error, pong
        exchange = exchange_from_url(rec.url) if rec.url else self.exchange
        if channel == "orderbook":
            return self._book(rec, obj, exchange, kind == "partial")
        if channel == "trades":
            return self._trades(rec, obj, exchange)
        return ()

    def _book(self, rec: RawRecord, obj: dict[str, Any], exchange: str, partial: bool) -> Sequence[Event]:
        d = obj["data"]
        if not isinstance(d, dict):
            raise TypeError("orderbook data is not an object")
        cs = optional_integer(d.get("checksum"), "checksum")
        return (
            BookMsg(
                StreamKey(exchange, _market(obj), Channel.BOOK),
                rec.local_us,
                seconds_to_us(d.get("time")),
                partial,
                level_list(d.get("bids", [])),
                level_list(d.get("asks", [])),
                rec.path,
                rec.line,
                checksum=cs,
                # No ids: a repeat is known by its bytes, which hold the exchange ``time``.
                raw=None if partial or d.get("time") is None else rec.raw,
            ),
        )

    def _trades(self, rec: RawRecord, obj: dict[str, Any], exchange: str) -> Sequence[Event]:
        key = StreamKey(exchange, _market(obj), Channel.TRADES)
        out: list[Event] = []
        trades = obj["data"]
        if not isinstance(trades, list) or not all(isinstance(t, dict) for t in trades):
            raise TypeError("trades data is not a list of objects")
        for t in trades:
            trade_id = t["id"]
            if isinstance(trade_id, bool) or not isinstance(trade_id, int):
                raise ValueError(f"trade without an integer id: {trade_id!r}")
            out.append(
                TradeMsg(
                    key,
                    rec.local_us,
                    _iso_us(t.get("time")),
                    trade_id,
                    as_text(t["price"]),
                    as_text(t["size"]),
                    t.get("side"),
                    rec.path,
                    rec.line,
                )
            )
        return out


VENUE = Venue(
    name="ftx",
    url_marks=("ftx.com", "ftexchange.com", "ftx.us", "ftxtr.com"),
    file_prefixes=("FTX", "FTX_US", "FTX_TR"),
    sniff=_sniff,
    session=FtxSession,
    rules=RULES,
)
