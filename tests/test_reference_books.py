"""The engine's rebuilt book equals an independent reference rebuild, level for level, as text.

Real captures: hftbacktest Binance USD-M, spot and COIN-M files (one REST snapshot, then
diffs; the diff that bridges the snapshot was received before it) and a cryptofeed
Binance USD-M capture (REST snapshots in ``*.http.0.0``, four symbols' diffs in ``*.ws.1.0``).
The points in time are spread over each capture; half of them fall exactly on a diff's
receive time (the message counts), half 1 us before one (it does not).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from reference import receive_times, reference_books

from shared.engine import rebuild_book

DATA = Path(__file__).resolve().parent / "data"
DEPTH = 25

USDM = [str(DATA / "hftbacktest" / "usdm" / "btcusdt_20240808.gz")]
SPOT = [str(DATA / "hftbacktest" / "spot" / "btcusdt_20240808.gz")]
COINM = [str(DATA / "hftbacktest" / "cm" / "btcusd_perp_20240808.gz")]
CRYPTOFEED = [
    str(DATA / "cryptofeed" / "BINANCE_FUTURES.http.0.0"),
    str(DATA / "cryptofeed" / "BINANCE_FUTURES.ws.1.0"),
]


def _points(paths: list[str], symbol: str, count: int) -> list[int]:
    """The first snapshot's receive time, then ``count`` points spread over the diffs after it."""
    snaps, diffs = receive_times(paths, symbol)
    assert snaps, f"no REST snapshot for {symbol}"
    after = [t for t in diffs if t > snaps[0]]
    assert len(after) >= count
    points = [snaps[0]]
    for k in range(count):
        t = after[round(k * (len(after) - 1) / (count - 1))]
        points.append(t - 1 if k % 2 and t - 1 > after[0] else t)
    points.append(after[-1] + 60_000_000)  # after the end of the capture
    return sorted(set(points))


def _first_difference(side: str, got: list[list[str]], want: list[list[str]]) -> str | None:
    for i in range(max(len(got), len(want))):
        g = got[i] if i < len(got) else None
        w = want[i] if i < len(want) else None
        if g != w:
            return f"{side}[{i}]: engine {g} reference {w}"
    return None


def _compare(paths: list[str], exchange: str, symbol: str, count: int) -> None:
    points = _points(paths, symbol, count)
    refs = reference_books(paths, symbol, points)
    problems: list[str] = []
    safe_points = 0
    for at in points:
        ref: dict[str, Any] = refs[at]
        got = rebuild_book(paths, exchange, symbol, at, depth=DEPTH)
        assert got["exchange"] == exchange and got["symbol"] == symbol
        if at == points[-1]:
            # After the end of the capture: the last book, which nothing vouches for any more.
            assert got["safe"] is False and got["note"].startswith("after the stream's last message")
            ref = {**ref, "safe": False}
        if ref["safe"]:
            safe_points += 1
        if got["safe"] != ref["safe"]:
            problems.append(f"at {at}: engine safe={got['safe']} reference safe={ref['safe']}")
        for side in ("bids", "asks"):
            diff = _first_difference(side, got[side], ref[side][:DEPTH])
            if diff is not None:
                problems.append(f"at {at}: {diff}")
    assert not problems, "\n".join(problems)
    # Only the first points may fall while the snapshot waits for its bridging diff.
    assert safe_points >= count - 1


@pytest.mark.parametrize(
    ("paths", "exchange", "symbol"),
    [
        pytest.param(USDM, "binance-futures", "BTCUSDT", id="hftbacktest-usdm"),
        pytest.param(SPOT, "binance", "BTCUSDT", id="hftbacktest-spot"),
        pytest.param(COINM, "binance-delivery", "BTCUSD_PERP", id="hftbacktest-coinm"),
    ],
)
def test_hftbacktest_books_match_reference(paths: list[str], exchange: str, symbol: str) -> None:
    _compare(paths, exchange, symbol, 20)


@pytest.mark.parametrize("symbol", ["SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT"])
def test_cryptofeed_binance_futures_books_match_reference(symbol: str) -> None:
    _compare(CRYPTOFEED, "binance-futures", symbol, 8)


def test_reference_bridges_the_buffered_diff() -> None:
    """The reference itself: the USD-M snapshot is bridged by a diff received before it."""
    snaps, _ = receive_times(USDM, "BTCUSDT")
    ref = reference_books(USDM, "BTCUSDT", [snaps[0] - 1, snaps[0]])
    assert ref[snaps[0] - 1] == {"bids": [], "asks": [], "safe": False}
    at_snapshot = ref[snaps[0]]
    assert at_snapshot["safe"]
    assert Decimal(at_snapshot["bids"][0][0]) < Decimal(at_snapshot["asks"][0][0])
