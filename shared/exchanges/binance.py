"""Binance spot (``binance``), USD-M (``binance-futures``) and COIN-M (``binance-delivery``).

Messages: ``{"stream": ..., "data": {...}}`` envelopes or bare events; REST depth
snapshots ``{"lastUpdateId", "bids", "asks"}`` (futures add ``E``/``T``), whose symbol is
only in the request URL (cryptofeed ``*.http.*`` files) or nowhere at all (hftbacktest
files, one symbol per file).

Rules: spot diffs chain ``U == previous u + 1``; futures diffs chain ``pu == previous u``.
A REST snapshot is bridged: spot drops ``u <= L`` and needs ``U <= L + 1 <= u``; futures
drop ``u < L`` and need ``U <= L <= u`` or ``pu == L`` (real captures open that way).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from shared.exchanges.base import HOUR_US, UnknownEvent, Venue, VenueRules, ms_to_us
from shared.model import BookMsg, Channel, Event, FundingMsg, RawRecord, StreamKey, TradeMsg
from shared.sequencing import CONSECUTIVE, PREV_LINK

SPOT = "binance"
FUTURES = "binance-futures"
DELIVERY = "binance-delivery"

RULES = (
    VenueRules(SPOT, book_rule=CONSECUTIVE, trade_rule=CONSECUTIVE),
    VenueRules(
        FUTURES,
        book_rule=PREV_LINK,
        trade_rule=CONSECUTIVE,
        funding_interval_us=8 * HOUR_US,
        # The highest cap Binance applies to any USD-M symbol (most are lower).
        funding_cap=Decimal("0.03"),
    ),
    VenueRules(
        DELIVERY,
        book_rule=PREV_LINK,
        trade_rule=CONSECUTIVE,
        funding_interval_us=8 * HOUR_US,
        funding_cap=Decimal("0.03"),
    ),
)

_SYMBOL_IN_URL = re.compile(r"[?&]symbol=([A-Za-z0-9_\-]+)")
# The combined-stream channels this module audits: a message on one of them with an event type
# it does not know means the format changed.
_AUDITED_CHANNELS = {
    "depth": Channel.BOOK,
    "trade": Channel.TRADES,
    "aggTrade": Channel.TRADES,
    "markPrice": Channel.FUNDING,
}


def exchange_from_url(url: str | None) -> str | None:
    if not url:
        return None
    if "fstream" in url or "fapi" in url:
        return FUTURES
    if "dstream" in url or "dapi" in url:
        return DELIVERY
    if "binance" in url:
        return SPOT
    return None


def _sniff(obj: Any) -> bool:
    if not isinstance(obj, dict):
        return False
    data = obj.get("data")
    if isinstance(data, dict) and isinstance(obj.get("stream"), str):
        return isinstance(data.get("e"), str) or "lastUpdateId" in data
    if "lastUpdateId" in obj and "bids" in obj:
        return True
    return obj.get("e") in ("depthUpdate", "trade", "aggTrade", "markPriceUpdate")


class BinanceSession:
    """One capture's worth of Binance messages."""

    def __init__(self, url: str | None) -> None:
        self.exchange: str | None = exchange_from_url(url)
        self.depth_symbols: set[str] = set()
        self._held_snapshot: tuple[RawRecord, dict[str, Any]] | None = None
        self._book_keys: dict[str, StreamKey] = {}

    # The exchange id is fixed by the URL when there is one, else by the first message
    # that tells (a futures diff carries ``pu``; a COIN-M symbol has an underscore).
    def _exchange_of(self, data: dict[str, Any]) -> str:
        if self.exchange is None:
            symbol = str(data.get("s", ""))
            if "_" in symbol or "ps" in data:
                self.exchange = DELIVERY
            elif "pu" in data or data.get("e") == "markPriceUpdate" or "X" in data:
                self.exchange = FUTURES
            elif data.get("e") == "depthUpdate":
                self.exchange = SPOT
            elif data.get("e") in ("trade", "aggTrade"):
                # Spot trade events carry "M" (ignore flag); futures ones do not.
                self.exchange = SPOT if "M" in data else FUTURES
            else:
                return FUTURES if "T" in data else SPOT
        return self.exchange

    def parse(self, rec: RawRecord, obj: Any) -> Sequence[Event]:
        if not isinstance(obj, dict):
            return ()
        stream = obj.get("stream")
        data = obj.get("data", obj) if "stream" in obj else obj
        if not isinstance(data, dict):
            return ()
        if "lastUpdateId" in data:
            # Tardis writes ``{"stream": "btcusdt@depthSnapshot", "data": {...}}``.
            symbol = stream.split("@", 1)[0].upper() if isinstance(stream, str) and "@" in stream else None
            return self._snapshot(rec, data, symbol)
        kind = data.get("e")
        if kind == "depthUpdate":
            return self._depth(rec, data)
        if kind == "trade" or kind == "aggTrade":
            return self._trade(rec, data, kind)
        if kind == "markPriceUpdate":
            return self._funding(rec, data)
        channel = stream.split("@")[1] if isinstance(stream, str) and "@" in stream else None
        if isinstance(kind, str) and channel in _AUDITED_CHANNELS:
            assert isinstance(stream, str)
            key = StreamKey(self._exchange_of(data), stream.split("@")[0].upper(), _AUDITED_CHANNELS[channel])
            raise UnknownEvent(kind, channel, key)
        return ()

    def _depth(self, rec: RawRecord, d: dict[str, Any]) -> Sequence[Event]:
        s = d["s"]
        key = self._book_keys.get(s)
        if key is None:
            key = self._book_keys[s] = StreamKey(self._exchange_of(d), s.upper(), Channel.BOOK)
            self.depth_symbols.add(key.symbol)
        first, last, exch = d["U"], d["u"], d.get("E")
        if type(first) is not int or type(last) is not int:
            raise ValueError("depthUpdate without integer U/u")
        msg = BookMsg(
            key,
            rec.local_us,
            exch * 1000 if type(exch) is int else None,
            False,
            d["b"],
            d["a"],
            rec.path,
            rec.line,
            first,
            last,
            d.get("pu"),
        )
        held = self._held_snapshot
        if held is not None:
            self._held_snapshot = None
            return [*self._snapshot_event(held[0], held[1], key.symbol), msg]
        return (msg,)

    def _snapshot(self, rec: RawRecord, d: dict[str, Any], symbol: str | None = None) -> Sequence[Event]:
        if not isinstance(d.get("lastUpdateId"), int):
            raise ValueError("depth snapshot without an integer lastUpdateId")
        if rec.url and self.exchange is None:
            self.exchange = exchange_from_url(rec.url)
        if symbol is None and rec.url:
            found = _SYMBOL_IN_URL.search(rec.url)
            if found:
                symbol = found.group(1).upper()
        if symbol is None and len(self.depth_symbols) == 1:
            symbol = next(iter(self.depth_symbols))
        if symbol is None:
            # A bare snapshot (hftbacktest) before any diff told us the symbol: it
            # belongs to the stream of the next diff.
            self._held_snapshot = (rec, d)
            return ()
        return self._snapshot_event(rec, d, symbol)

    def _snapshot_event(self, rec: RawRecord, d: dict[str, Any], symbol: str) -> Sequence[Event]:
        exchange = self.exchange or (FUTURES if "T" in d else SPOT)
        return (
            BookMsg(
                StreamKey(exchange, symbol, Channel.BOOK),
                rec.local_us,
                ms_to_us(d.get("E")),
                True,
                d["bids"],
                d["asks"],
                rec.path,
                rec.line,
                last_id=d["lastUpdateId"],
                bridge=True,
            ),
        )

    def _trade(self, rec: RawRecord, d: dict[str, Any], kind: str) -> Sequence[Event]:
        exchange = self._exchange_of(d)
        trade_id = d["t"] if kind == "trade" else d["a"]
        if not isinstance(trade_id, int):
            raise ValueError(f"{kind} without an integer id")
        side = "sell" if d.get("m") else "buy"
        return (
            TradeMsg(
                StreamKey(exchange, d["s"].upper(), Channel.TRADES),
                rec.local_us,
                ms_to_us(d.get("E")),
                trade_id,
                d["p"],
                d["q"],
                side,
                rec.path,
                rec.line,
                series="t" if kind == "trade" else "a",
            ),
        )

    def _funding(self, rec: RawRecord, d: dict[str, Any]) -> Sequence[Event]:
        exchange = self._exchange_of(d)
        if exchange == SPOT:
            exchange = FUTURES
        # Delivery contracts have no funding: Binance sends "r": "" and "T": 0 for them.
        rate = d.get("r")
        settle = d.get("T")
        return (
            FundingMsg(
                StreamKey(exchange, d["s"].upper(), Channel.FUNDING),
                rec.local_us,
                ms_to_us(d.get("E")),
                ms_to_us(settle) if settle else None,
                rate if rate != "" else None,
                rec.path,
                rec.line,
            ),
        )


VENUE = Venue(
    name="binance",
    url_marks=("binance.com", "binance.us"),
    file_prefixes=("BINANCE", "BINANCE_FUTURES", "BINANCE_DELIVERY", "BINANCE_US"),
    sniff=_sniff,
    session=BinanceSession,
    rules=RULES,
)
