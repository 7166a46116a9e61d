"""Binance's REST history as a replay source: trades by id.

``/api/v3/historicalTrades`` (spot), ``/fapi/v1/historicalTrades`` (USD-M) and
``/dapi/v1/historicalTrades`` (COIN-M) fill ``trade`` id gaps; ``…/aggTrades`` with
``fromId`` fills ``aggTrade`` id gaps.  Each row is turned back into the stream message the
capture would have held and read by the Binance venue module, so a fill is checked exactly as
a recording would be.

Binance limits by IP weight per minute, reports the weight used in ``X-MBX-USED-WEIGHT-1m``,
answers 429 with ``Retry-After`` and bans (418, from 2 minutes to 3 days) whoever keeps asking
after a 429.  So: every request reserves its weight from the source's shared budget (the
gate); a weight header past 90 % of the budget holds every worker off until the next minute;
a 429 holds every worker off for its ``Retry-After``; a 418 holds them off for the ban and
fails the source at once.

Binance keeps no history of depth updates: a book gap cannot be filled from it.  (A depth
snapshot closes a gap only when taken inside it, which only a recorder running at the time can
do: retape resyncs on the snapshots a capture holds, and reports those as resyncs.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from shared.model import Channel
from shared.replay.fill import Record
from shared.replay.limits import Gate
from shared.replay.request import FillRequest
from shared.replay.retry import (
    Attempts,
    BadAnswer,
    NoData,
    RetryPolicy,
    SourceFailed,
    call,
    raise_if_transient,
    refused,
    retry_after_seconds,
    upstream,
)

API_KEY_ENV = "RETAPE_BINANCE_API_KEY"
PAGE = 1000
# Of the weight budget: past this share (by Binance's own count) nobody asks until the minute turns.
WEIGHT_CEILING = 0.9

# exchange id -> (path prefix, weight of historicalTrades, weight of aggTrades, budget per minute)
MARKETS: dict[str, tuple[str, int, int, int]] = {
    "binance": ("/api/v3", 25, 4, 6000),
    "binance-us": ("/api/v3", 25, 4, 1200),
    "binance-futures": ("/fapi/v1", 20, 20, 2400),
    "binance-delivery": ("/dapi/v1", 20, 20, 2400),
}
# The public hosts and the one market each serves; any other host (a mirror, a test server on
# loopback, named ``binance+http://``) serves all of them.
HOSTS = {
    "api.binance.com": "binance",
    "api.binance.us": "binance-us",
    "fapi.binance.com": "binance-futures",
    "dapi.binance.com": "binance-delivery",
}
STREAM_NAMES = {"t": "trade", "a": "aggTrade"}


def is_binance_rest(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme.startswith("binance+") or (parts.hostname or "") in HOSTS


def default_weight_budget(url: str) -> int:
    market = HOSTS.get(urlsplit(url).hostname or "")
    return MARKETS[market][3] if market else 2400


class BinanceRestSource:
    def __init__(
        self,
        name: str,
        url: str,
        gate: Gate,
        policy: RetryPolicy,
        weight_budget: int,
        transport: httpx.BaseTransport | None = None,
        read_timeout_s: float = 30.0,
    ) -> None:
        self.name = name
        self.gate = gate
        self.policy = policy
        self.weight_budget = weight_budget
        parts = urlsplit(url)
        scheme = parts.scheme.removeprefix("binance+")
        host = parts.hostname or ""
        self.markets = {HOSTS[host]} if host in HOSTS else set(MARKETS)
        netloc = host if not parts.port else f"{host}:{parts.port}"
        headers = {}
        key = os.environ.get(API_KEY_ENV)
        if key:
            headers["X-MBX-APIKEY"] = key
        self.keyed = bool(key)
        self.client = httpx.Client(
            base_url=f"{scheme}://{netloc}",
            headers=headers,
            timeout=httpx.Timeout(connect=5.0, read=read_timeout_s, write=10.0, pool=30.0),
            transport=transport,
        )

    def close(self) -> None:
        self.client.close()

    def records(self, req: FillRequest, attempts: Attempts) -> Iterator[Record]:
        key = req.key
        if key.exchange not in self.markets:
            raise NoData(f"{self.name} serves {', '.join(sorted(self.markets))}, not {key.exchange}")
        if key.channel != Channel.TRADES:
            raise NoData("Binance keeps no history of depth updates (a book gap needs another source)")
        series = req.series or "t"
        if series not in STREAM_NAMES:
            raise NoData(f"no Binance history for trade id series {series!r}")
        prefix, w_trades, w_agg, _ = MARKETS[key.exchange]
        path, weight = (
            (f"{prefix}/historicalTrades", w_trades) if series == "t" else (f"{prefix}/aggTrades", w_agg)
        )
        stream = f"{key.symbol.lower()}@{STREAM_NAMES[series]}"
        next_id = req.after + 1
        while next_id < req.before:
            limit = min(PAGE, req.before - next_id)
            ask = partial(self._page, path, key.symbol, next_id, limit)
            rows = call(self.gate, self.policy, ask, attempts, weight=weight)
            if not rows:
                return
            last = next_id - 1
            for row in rows:
                message, ident = _as_stream_message(row, series, key.symbol, stream)
                if ident < next_id:
                    raise BadAnswer(f"asked from id {next_id}, it answered id {ident}")
                last = ident
                yield None, message
            next_id = last + 1

    def _page(self, path: str, symbol: str, from_id: int, limit: int) -> list[dict[str, Any]]:
        params = {"symbol": symbol, "fromId": str(from_id), "limit": str(limit)}
        with upstream(self.name):
            response = self.client.get(path, params=params)
        self._watch_weight(response)
        status = response.status_code
        if status == 200:
            try:
                rows = orjson.loads(response.content)
            except orjson.JSONDecodeError:
                raise BadAnswer(f"{self.name} answered something that is not JSON") from None
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise BadAnswer(f"{self.name} answered JSON that is not a list of trades")
            return rows
        if status == 418:
            ban = retry_after_seconds(response.headers.get("retry-after"))
            ban = ban if ban is not None else 120.0
            self.gate.hold_off(ban)
            raise SourceFailed(f"{self.name} banned this IP (HTTP 418) for {ban:.0f} s")
        raise_if_transient(response, self.name)
        if status in (401, 403):
            raise refused(self.name, status, API_KEY_ENV, self.keyed, "a key with market data permission")
        if status == 400 and b"-1121" in response.content:
            raise NoData(f"{self.name} has no symbol {symbol}")
        raise BadAnswer(f"{self.name} answered HTTP {status}: {response.text[:120]}")

    def _watch_weight(self, response: httpx.Response) -> None:
        used = response.headers.get("x-mbx-used-weight-1m")
        if used is None or not used.strip().isdigit():
            return
        if int(used) >= WEIGHT_CEILING * self.weight_budget:
            self.gate.hold_off(60.0 - time.time() % 60.0 + 0.5)


def _as_stream_message(row: dict[str, Any], series: str, symbol: str, stream: str) -> tuple[bytes, int]:
    """A REST trade row as the stream message a recorder would have written, and its id."""
    try:
        if series == "t":
            ident = int(row["id"])
            data = {
                "e": "trade",
                "E": row["time"],
                "T": row["time"],
                "s": symbol,
                "t": ident,
                "p": row["price"],
                "q": row["qty"],
                "m": row["isBuyerMaker"],
            }
        else:
            ident = int(row["a"])
            data = {
                "e": "aggTrade",
                "E": row["T"],
                "T": row["T"],
                "s": symbol,
                "a": ident,
                "p": row["p"],
                "q": row["q"],
                "f": row.get("f"),
                "l": row.get("l"),
                "m": row["m"],
            }
    except (KeyError, TypeError, ValueError) as exc:
        raise BadAnswer(f"a trade row without {exc}") from None
    return orjson.dumps({"stream": stream, "data": data}), ident
