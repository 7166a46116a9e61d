"""The engine's books equal the independent reference (``tests/reference.py``) on real non-Binance captures.

Every book stream (instrument) of each capture is compared at points spread over it: just before its first
snapshot, at it, then points that fall exactly on a message's receive time (the message counts) or 1 us
before one (it does not), and after the end.  Streams with few messages get every message's time, topped
up with points spread over the whole capture.  Prices and quantities are compared by exact value, and as
text where the venue sends strings; ``safe`` is compared too.

The reference's own checksums are checked first (OKX 290/290, Kraken 4269/4269), so the reference is
proven by the exchange before it judges the engine.

The Bybit file is plain JSON lines without a receive time: ``rebuild_book`` cannot select by time there
(every message counts whatever ``at_us``), so only the book after the whole file is compared.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from reference import (
    kraken_checksum,
    okx_checksum,
    venue_books,
    venue_checksums,
    venue_final_book,
    venue_receive_times,
    venue_symbols,
)

from shared.engine import audit_paths, rebuild_book

DATA = Path(__file__).resolve().parent / "data"
DEPTH = 25
AFTER_END_US = 60_000_000
FAR_FUTURE_US = 4_102_444_800_000_000  # 2100-01-01

OKX = [str(DATA / "cryptofeed" / "OKX.ws.1.0")]
KRAKEN = [str(DATA / "cryptofeed" / "KRAKEN.ws.50.0")]
DERIBIT = [str(DATA / "cryptofeed_deribit" / "DERIBIT.ws.30.0")]
BYBIT = [str(DATA / "nautilus" / "2024-12-01_XRPUSDT_ob500.data")]
KRAKEN_FUTURES = [str(DATA / "cryptofeed" / "KRAKEN_FUTURES.ws.1.0")]
COINBASE = [str(DATA / "cryptofeed" / "COINBASE.ws.28.0")]

OKX_EXCHANGE = {"BTC-USDT": "okex", "BTC-USD-220527": "okex-futures", "UNI-USD-SWAP": "okex-swap"}

# venue -> (paths, exchange id (or per instrument), prices/quantities sent as strings, streams, points)
CAPTURES: dict[str, tuple[list[str], str | dict[str, str], bool, int, int]] = {
    "okx": (OKX, OKX_EXCHANGE, True, 3, 16),
    "kraken": (KRAKEN, "kraken", True, 10, 12),
    "deribit": (DERIBIT, "deribit", False, 10, 12),
    "kraken-futures": (KRAKEN_FUTURES, "cryptofacilities", False, 10, 12),
    "coinbase": (COINBASE, "coinbase", True, 10, 12),
}


def _exchange(venue: str, symbol: str) -> str:
    exchange = CAPTURES[venue][1] if venue in CAPTURES else "bybit"
    return exchange if isinstance(exchange, str) else exchange[symbol]


def _spread(times: list[int], count: int) -> set[int]:
    """``count`` of ``times`` evenly spread, every other one moved 1 us earlier."""
    if len(times) <= count:
        return set(times) | {t - 1 for t in times}
    out: set[int] = set()
    for k in range(count):
        t = times[round(k * (len(times) - 1) / (count - 1))]
        out.add(t - 1 if k % 2 else t)
    return out


def _points(paths: list[str], venue: str, symbol: str, count: int) -> list[int]:
    snaps, updates = venue_receive_times(paths, venue, symbol)
    assert snaps, f"no snapshot for {symbol}"
    stream = sorted(t for t in snaps + updates if t > snaps[0])
    points = {snaps[0] - 1, snaps[0], max([snaps[0], *stream]) + AFTER_END_US} | _spread(stream, count)
    if len(points) < 10:  # a quiet instrument: also check it while the others move
        everything = sorted(
            t for s in venue_symbols(paths, venue) for ts in venue_receive_times(paths, venue, s) for t in ts
        )
        points |= _spread(everything, 10)
    return sorted(points)


def _first_difference(side: str, got: list[list[Any]], want: list[list[str]], text: bool) -> str | None:
    for i in range(max(len(got), len(want))):
        g = got[i] if i < len(got) else None
        w = want[i] if i < len(want) else None
        same = (
            g is not None
            and w is not None
            and Decimal(str(g[0])) == Decimal(w[0])
            and Decimal(str(g[1])) == Decimal(w[1])
            and (not text or [str(g[0]), str(g[1])] == w)
        )
        if not same:
            return f"{side}[{i}]: engine {g} reference {w}"
    return None


def _problems(got: dict[str, Any], ref: dict[str, Any], text: bool) -> list[str]:
    out: list[str] = []
    if got["safe"] != ref["safe"]:
        out.append(f"engine safe={got['safe']} reference safe={ref['safe']}")
    for side in ("bids", "asks"):
        diff = _first_difference(side, got[side], ref[side][:DEPTH], text)
        if diff is not None:
            out.append(diff)
    return out


def _streams() -> list[Any]:
    return [
        pytest.param(venue, symbol, id=f"{venue}-{symbol}")
        for venue, (paths, *_) in CAPTURES.items()
        for symbol in venue_symbols(paths, venue)
    ]


# -- the reference itself ------------------------------------------------------------------------------------


def test_reference_checksums_match_documented_vectors() -> None:
    assert okx_checksum([["3366.1", "7"], ["3366", "6"]], [["3366.8", "9"], ["3368", "8"]]) == -1881014294
    assert okx_checksum([["3366.1", "7"]], [["3366.8", "9"], ["3368", "8"], ["3372", "8"]]) == 831078360
    asks = [[f"0.0{5005 + 5 * i}", "0.00000500"] for i in range(10)]
    bid_prices = ["0.05000", "0.04995", "0.04990", "0.04980", "0.04975"]
    bid_prices += ["0.04970", "0.04965", "0.04960", "0.04955", "0.04950"]
    bids = [[p, "0.00000500"] for p in bid_prices]
    assert kraken_checksum(bids, asks) == 974947235
    assert okx_checksum([], []) == kraken_checksum([], []) == 0


@pytest.mark.parametrize(("venue", "paths", "messages"), [("okx", OKX, 290), ("kraken", KRAKEN, 4269)])
def test_reference_books_match_every_exchange_checksum(venue: str, paths: list[str], messages: int) -> None:
    results = venue_checksums(paths, venue)
    checked = [(s, *r) for s, rs in results.items() for r in rs]
    assert len(checked) == messages
    wrong = [c for c in checked if c[2] != c[3]]
    assert not wrong, f"{len(wrong)} reference checksums differ, first: {wrong[:3]}"


@pytest.mark.parametrize("venue", [*CAPTURES, "bybit"])
def test_reference_finds_the_engines_book_streams(venue: str) -> None:
    paths = BYBIT if venue == "bybit" else CAPTURES[venue][0]
    symbols = venue_symbols(paths, venue)
    assert len(symbols) == (1 if venue == "bybit" else CAPTURES[venue][3])
    engine = {(s.key.exchange, s.key.symbol) for s in audit_paths(paths).streams if s.key.channel == "book"}
    assert engine == {(_exchange(venue, s), s) for s in symbols}


# -- engine against reference --------------------------------------------------------------------------------


@pytest.mark.parametrize(("venue", "symbol"), _streams())
def test_engine_books_match_reference(venue: str, symbol: str) -> None:
    paths, _, text, _, count = CAPTURES[venue]
    exchange = _exchange(venue, symbol)
    points = _points(paths, venue, symbol, count)
    assert len(points) >= 10
    refs = venue_books(paths, venue, symbol, points)
    problems: list[str] = []
    ended: list[int] = []  # points after the capture's end: the last book, which nothing vouches for
    for at in points:
        got = rebuild_book(paths, exchange, symbol, at, depth=DEPTH)
        assert got["exchange"] == exchange and got["symbol"] == symbol
        ref = refs[at]
        if got.get("note", "").startswith("after the stream's last message"):
            assert got["safe"] is False and at > max(
                t for ts in venue_receive_times(paths, venue, symbol) for t in ts
            )
            ended.append(at)
            ref = {**ref, "safe": False}
        problems.extend(f"at {at}: {p}" for p in _problems(got, ref, text))
    assert not problems, "\n".join(problems)
    assert ended == [max(points)]  # the point after the end, and only it
    # Every point from the first snapshot on has a book the venue vouches for (0 gaps, checksums verified).
    first_snapshot = venue_receive_times(paths, venue, symbol)[0][0]
    vouched = [at for at in points if refs[at]["safe"] and at not in ended]
    assert vouched == [at for at in points if at >= first_snapshot and at not in ended]


def test_engine_bybit_final_book_matches_reference() -> None:
    """No receive times in the file: the engine applies every message whatever ``at_us``; compare the end."""
    ref = venue_final_book(BYBIT, "bybit", "XRPUSDT")
    got = rebuild_book(BYBIT, "bybit", "XRPUSDT", FAR_FUTURE_US, depth=DEPTH)
    assert got["local_timestamp"] is None
    assert ref["safe"] and len(ref["bids"]) >= DEPTH and len(ref["asks"]) >= DEPTH
    assert not _problems(got, ref, text=True)
