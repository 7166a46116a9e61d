"""Binance REST snapshots bridged onto the stream, in the cases real recorders produce."""

from __future__ import annotations

from pathlib import Path

import orjson

from shared.auditors import AuditConfig
from shared.engine import Engine

T0 = 1723161255030314667


def snap(last: int, bids: list, asks: list) -> dict:
    return {"lastUpdateId": last, "E": 1723161255000, "T": 1723161255000, "bids": bids, "asks": asks}


def diff(
    first: int, last: int, prev: int, bids: list, asks: list, symbol: str = "BTCUSDT", e: int = 0
) -> dict:
    data = {
        "e": "depthUpdate",
        "E": 1723161255001 + e,
        "T": 1723161255001 + e,
        "s": symbol,
        "U": first,
        "u": last,
        "pu": prev,
        "b": bids,
        "a": asks,
    }
    return {"stream": f"{symbol.lower()}@depth", "data": data}


def spot(first: int, last: int, bids: list) -> dict:
    data = {"e": "depthUpdate", "E": 1723161255001, "s": "BTCUSDT", "U": first, "u": last, "b": bids, "a": []}
    return {"stream": "btcusdt@depth", "data": data}


def run(tmp_path: Path, objs: list):  # type: ignore[no-untyped-def]
    path = tmp_path / "capture.txt"
    path.write_bytes(
        b"".join(b"%d " % (T0 + i * 1_000_000) + orjson.dumps(o) + b"\n" for i, o in enumerate(objs))
    )
    outcome = Engine(AuditConfig()).run([str(path)])
    books = [s for s in outcome.streams if s.key.channel == "book"]
    return books, outcome


def test_resync_after_a_gap_replays_the_diffs_newer_than_the_snapshot(tmp_path: Path) -> None:
    objs = [diff(10, 10, 9, [], []), snap(10, [["100", "1"]], [["110", "1"]])]
    for u in (11, 12, 13, 15, 16, 17, 18):  # 14 is lost
        if u == 18:  # the recorder fetched a fresh REST snapshot (state after 16), received after 17
            objs.append(snap(16, [["100", "1"], ["95", "16"]], [["110", "1"]]))
        objs.append(diff(u, u, u - 1, [["95", str(u)]], []))
    (book,), _ = run(tmp_path, objs)
    assert book.faults["gap"] == 1 and [(g.after, g.before) for g in book.gaps] == [(13, 15)]
    engine = Engine(AuditConfig())
    engine.run([str(tmp_path / "capture.txt")])
    (auditor,) = next(iter(engine.closed_books.values()))
    assert auditor.in_sync and auditor.book.bids.top(2) == [("100", "1"), ("95", "18")]


def test_a_redundant_rest_snapshot_does_not_break_reordering(tmp_path: Path) -> None:
    objs = [
        snap(1, [["100", "1"]], [["110", "1"]]),
        diff(2, 2, 1, [], []),
        diff(4, 4, 3, [], []),
        snap(2, [["100", "1"]], [["110", "1"]]),
        diff(3, 3, 2, [], []),
        diff(5, 5, 4, [], []),
    ]
    (book,), _ = run(tmp_path, objs)
    assert book.faults["gap"] == 0 and book.faults["out_of_order"] == 1


def test_the_first_bridging_diff_is_reordered_too(tmp_path: Path) -> None:
    objs = [
        {"lastUpdateId": 10, "bids": [["100", "1"]], "asks": [["110", "1"]]},
        spot(12, 12, [["99", "1"]]),
        spot(11, 11, [["98", "1"]]),
    ]
    (book,), _ = run(tmp_path, objs)
    assert book.faults["gap"] == 0 and book.faults["duplicate"] == 0 and book.faults["out_of_order"] == 1


def test_every_late_message_is_counted(tmp_path: Path) -> None:
    objs = [snap(2, [["100", "1"]], [["110", "1"]])] + [diff(u, u, u - 1, [], []) for u in (6, 5, 4, 3)]
    (book,), _ = run(tmp_path, objs)
    assert book.faults["out_of_order"] == 3 and book.faults["gap"] == 0


def test_rest_snapshot_time_is_not_a_clock_check(tmp_path: Path) -> None:
    late_rest = snap(5, [["100", "1"]], [["110", "1"]])
    late_rest["E"] = 1723161256000  # served after the diffs it is bridged onto were sent
    objs = [diff(5, 6, 4, [], []), late_rest, diff(7, 7, 6, [], [])]
    (book,), _ = run(tmp_path, objs)
    assert book.faults["timestamp_drift"] == 0 and book.faults["gap"] == 0


def test_tardis_depth_snapshots_go_to_their_own_symbol(tmp_path: Path) -> None:
    def tsnap(symbol: str, last: int, px: str) -> dict:
        return {
            "stream": f"{symbol.lower()}@depthSnapshot",
            "generated": True,
            "data": {"lastUpdateId": last, "bids": [[px, "1"]], "asks": [[str(int(px) + 1), "1"]]},
        }

    objs = [
        diff(1, 1, 0, [], [], "BTCUSDT"),
        diff(1, 1, 0, [], [], "ETHUSDT"),
        tsnap("BTCUSDT", 1, "60000"),
        diff(2, 2, 1, [], [], "ETHUSDT"),
        tsnap("ETHUSDT", 2, "3000"),
        diff(2, 2, 1, [], [], "BTCUSDT"),
    ]
    books, _ = run(tmp_path, objs)
    engine = Engine(AuditConfig())
    engine.run([str(tmp_path / "capture.txt")])
    tops = {k.symbol: a[-1].book.bids.top(1) for k, a in engine.closed_books.items()}
    assert tops == {"BTCUSDT": [("60000", "1")], "ETHUSDT": [("3000", "1")]}
    assert all(b.faults["gap"] == 0 for b in books)


def test_delivery_mark_price_without_funding_is_not_a_fault(tmp_path: Path) -> None:
    objs = [
        {
            "stream": "btcusd_210924@markPrice",
            "data": {
                "e": "markPriceUpdate",
                "E": 1626912000000 + i,
                "s": "BTCUSD_210924",
                "p": "32000.1",
                "P": "32001",
                "r": "",
                "T": 0,
            },
        }
        for i in range(5)
    ]
    _, outcome = run(tmp_path, objs)
    (funding,) = outcome.streams
    assert funding.key.exchange == "binance-delivery" and not any(funding.faults.values())


def test_spot_agg_trades_are_spot_before_any_depth_message(tmp_path: Path) -> None:
    def agg(a: int) -> dict:
        return {
            "stream": "btcusdt@aggTrade",
            "data": {
                "e": "aggTrade",
                "E": 1,
                "s": "BTCUSDT",
                "a": a,
                "p": "1",
                "q": "1",
                "f": a,
                "l": a,
                "T": 1,
                "m": True,
                "M": True,
            },
        }

    objs = [agg(1), agg(2), spot(1, 1, []), agg(3), agg(4)]
    _, outcome = run(tmp_path, objs)
    trades = [s for s in outcome.streams if s.key.channel == "trades"]
    assert [(s.key.exchange, s.messages) for s in trades] == [("binance", 4)]
