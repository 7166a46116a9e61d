"""Bybit venue: v5 (historical ob500 download) and legacy v2 (cryptofeed captures)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from venue_harness import DATA, audit_events, feed, messages, parse_capture, record

from shared.exchanges import rules_for, venue_for_file, venue_for_message, venue_for_url
from shared.exchanges.bybit import VENUE, BybitSession
from shared.formats.readers import read_cryptofeed, read_jsonl
from shared.model import BookMsg, Event, RawRecord, StreamKey, TradeMsg
from shared.sequencing import CONSECUTIVE, NONE

V5 = DATA / "nautilus" / "2024-12-01_XRPUSDT_ob500.data"
V2_USDT = DATA / "cryptofeed" / "BYBIT.ws.25.0"
V2_INVERSE = DATA / "cryptofeed" / "BYBIT.ws.26.0"
XRP = StreamKey("bybit", "XRPUSDT", "book")


def _reader(path: Path) -> Callable[[str], Iterator[RawRecord]]:
    return read_jsonl if path.suffix == ".data" else read_cryptofeed


def _messages(path: Path) -> Iterator[tuple[RawRecord, Any]]:
    return messages(path, _reader(path))


def _events(path: Path) -> list[Event]:
    return parse_capture(VENUE, path, _reader(path))


def _rec(obj: Any, line: int = 1) -> RawRecord:
    return record(obj, line, 1_000_000 + line)


def _v5(kind: str, u: int, b: list[list[str]], a: list[list[str]]) -> dict[str, Any]:
    return {
        "topic": "orderbook.50.BTCUSDT",
        "type": kind,
        "ts": 1_700_000_000_000 + u,
        "data": {"s": "BTCUSDT", "b": b, "a": a, "u": u, "seq": 1000 + u},
        "cts": 1_700_000_000_000,
    }


def test_rules_and_routing() -> None:
    for exchange in ("bybit", "bybit-spot", "bybit-options"):
        assert rules_for(exchange).book_rule is CONSECUTIVE
        assert rules_for(exchange).trade_rule is NONE
    assert venue_for_file("BYBIT.ws.25.0") is VENUE
    assert venue_for_url("wss://stream.bybit.com/realtime_public") is VENUE
    assert venue_for_url("wss://stream.bybit.com/v5/public/linear") is VENUE
    spot = VENUE.session("wss://stream.bybit.com/v5/public/spot")
    assert isinstance(spot, BybitSession) and spot.exchange == "bybit-spot"
    _, obj = next(_messages(V5))
    assert venue_for_message(obj) is VENUE


def test_v5_u_chain_is_complete() -> None:
    events = _events(V5)
    books = [e for e in events if isinstance(e, BookMsg)]
    assert len(books) == 50 and books[0].snapshot and not any(e.snapshot or e.reset for e in books[1:])
    deltas = books[1:]
    assert [e.last_id for e in books] == list(range(20254869, 20254919))
    assert all(e.first_id == e.last_id and e.prev_id is None for e in books)
    assert books[0].bids[0] == ["1.9531", "6203"] and books[0].exch_us == 1733011200691000
    auditors, results = audit_events(events)
    r = results[XRP]
    assert r.gaps == [] and r.notes == {}
    assert {k: n for k, n in r.faults.items() if n} == {}
    # All 49 deltas passed the u == previous u + 1 check.
    assert len(deltas) == 49 and r.messages == 50
    a = auditors[XRP]
    assert a.seq.last == 20254918 and not a.seq.pending and a.safe
    # Levels leaving the 500-level window are deleted by the exchange: no trimming needed.
    assert len(a.book.bids) == 500 and len(a.book.asks) == 500


def test_v5_dropping_one_delta_gives_one_gap() -> None:
    events = _events(V5)
    dropped = events[20]
    assert isinstance(dropped, BookMsg) and dropped.last_id == 20254889
    _, results = audit_events([e for e in events if e is not dropped])
    r = results[XRP]
    assert r.faults["gap"] == 1
    assert [(g.after, g.before, g.missing) for g in r.gaps] == [(20254888, 20254890, 1)]


def test_v5_restart_snapshot_u1_resets_without_gap() -> None:
    session = VENUE.session(None)
    msgs = [
        _v5("snapshot", 100, [["100.0", "1"]], [["101.0", "1"]]),
        _v5("delta", 101, [["100.5", "2"]], []),
        _v5("delta", 1, [["99.0", "5"]], [["102.0", "4"]]),  # service restart: full book
        _v5("delta", 2, [], [["102.0", "0"], ["103.0", "1"]]),
    ]
    events = [e for i, m in enumerate(msgs) for e in session.parse(_rec(m, i + 1), m)]
    assert [(e.snapshot, e.reset) for e in events if isinstance(e, BookMsg)] == [
        (True, False),
        (False, False),
        (False, True),
        (False, False),
    ]
    auditors, results = audit_events(events)
    (r,) = results.values()
    assert r.gaps == [] and r.faults["snapshot_mismatch"] == 1  # the restart book differs
    (a,) = auditors.values()
    assert a.book.bids.sorted_levels() == [("99.0", "5")]
    assert a.book.asks.sorted_levels() == [("103.0", "1")]


def test_v5_public_trades() -> None:
    session = VENUE.session("wss://stream.bybit.com/v5/public/linear")
    msg = {
        "topic": "publicTrade.BTCUSDT",
        "type": "snapshot",
        "ts": 1672304486868,
        "data": [
            {
                "T": 1672304486865,
                "s": "BTCUSDT",
                "S": "Buy",
                "v": "0.001",
                "p": "16578.50",
                "L": "PlusTick",
                "i": "20f43950-d8dd-5b31-9112-a178eb6023af",
                "BT": False,
            },
            {
                "T": 1672304486866,
                "s": "BTCUSDT",
                "S": "Sell",
                "v": "0.010",
                "p": "16578.00",
                "L": "MinusTick",
                "i": "20f43950-d8dd-5b31-9112-a178eb6023ag",
                "BT": False,
            },
        ],
    }
    events = list(session.parse(_rec(msg), msg)) + list(session.parse(_rec(msg, 2), msg))
    t = events[0]
    assert isinstance(t, TradeMsg)
    assert (t.trade_id, t.price, t.qty, t.side, t.exch_us) == (
        "20f43950-d8dd-5b31-9112-a178eb6023af",
        "16578.50",
        "0.001",
        "buy",
        1672304486865000,
    )
    _, results = audit_events(events)
    (r,) = results.values()
    assert r.messages == 4 and r.faults["duplicate"] == 2  # the repeated message


@pytest.mark.parametrize(
    ("path", "snapshots", "deltas", "trades"), [(V2_USDT, 8, 3252, 101), (V2_INVERSE, 2, 1016, 150)]
)
def test_v2_captures(path: Path, snapshots: int, deltas: int, trades: int) -> None:
    events = _events(path)
    books = [e for e in events if isinstance(e, BookMsg)]
    assert sum(e.snapshot for e in books) == snapshots
    assert len(books) - snapshots == deltas
    # v2 messages carry no ids: cross_seq is not contiguous and "bybit" holds the v5 rule.
    assert all(e.first_id is None and e.last_id is None and e.raw is not None for e in books)
    assert sum(isinstance(e, TradeMsg) for e in events) == trades
    auditors: dict[StreamKey, Any] = {}
    for e in events:
        a = feed(auditors, e, rules_for("bybit"))
        if isinstance(e, BookMsg):
            # orderBookL2_25 keeps 25 levels a side: inserts and deletes must balance out.
            assert len(a.book.bids) <= 25 and len(a.book.asks) <= 25, e.line
    applied = 0
    for key, a in auditors.items():
        r = a.finish()
        bad = {k: n for k, n in r.faults.items() if n and k != "timestamp_drift"}
        assert bad == {}, (key, bad)
        assert r.notes == {}, key
        if key.channel == "book":
            applied += r.messages
            assert len(a.book.bids) == 25 and len(a.book.asks) == 25 and a.safe
    assert applied == snapshots + deltas


def test_v2_usdt_snapshot_shape_and_text_prices() -> None:
    first = next(e for e in _events(V2_USDT) if isinstance(e, BookMsg))
    assert first.key == StreamKey("bybit", "BCHUSDT", "book") and first.snapshot
    assert first.bids[0] == ["1053.05", 2.63]
    assert first.exch_us == 1618677786389362  # timestamp_e6 as text on USDT contracts


def test_v2_delete_rows_use_the_id_map() -> None:
    session = VENUE.session("wss://stream.bybit.com/realtime")
    snap = {
        "topic": "orderBookL2_25.BTCUSD",
        "type": "snapshot",
        "data": [
            {"price": "100.00", "symbol": "BTCUSD", "id": 1000000, "side": "Buy", "size": 5},
            {"price": "100.50", "symbol": "BTCUSD", "id": 1005000, "side": "Sell", "size": 7},
        ],
        "cross_seq": 10,
        "timestamp_e6": 1618677786598877,
    }
    delta = {
        "topic": "orderBookL2_25.BTCUSD",
        "type": "delta",
        "data": {
            "delete": [{"symbol": "BTCUSD", "id": 1000000, "side": "Buy"}],
            "update": [{"symbol": "BTCUSD", "id": 1005000, "side": "Sell", "size": 3}],
            "insert": [{"price": "99.50", "symbol": "BTCUSD", "id": 995000, "side": "Buy", "size": 1}],
        },
        "cross_seq": 12,
        "timestamp_e6": "1618677786618874",
    }
    (s,) = session.parse(_rec(snap), snap)
    (d,) = session.parse(_rec(delta, 2), delta)
    assert isinstance(d, BookMsg) and not d.snapshot
    assert d.bids == [["100.00", 0], ["99.50", 1]] and d.asks == [["100.50", 3]]
    assert d.exch_us == 1618677786618874
    unknown = {
        "topic": "orderBookL2_25.BTCUSD",
        "type": "delta",
        "data": {
            "delete": [],
            "update": [{"symbol": "BTCUSD", "id": 42, "side": "Buy", "size": 3}],
            "insert": [],
        },
    }
    (u,) = session.parse(_rec(unknown, 3), unknown)
    assert isinstance(u, BookMsg) and u.bids == [["id:42", 3]]
    _, results = audit_events([s, d, u])
    (r,) = results.values()
    assert r.faults["invalid_value"] == 1  # an update for a level never seen


def test_v2_trades_and_bad_messages() -> None:
    rec, obj = next((r, o) for r, o in _messages(V2_INVERSE) if str(o.get("topic", "")).startswith("trade."))
    session = VENUE.session(rec.url)
    trades = session.parse(rec, obj)
    t = trades[0]
    assert isinstance(t, TradeMsg)
    assert t.trade_id == "5ffb8b77-900c-507d-97a2-0922557ffe54"
    assert (t.price, t.qty, t.side, t.exch_us) == (60621.5, 4, "sell", 1618677786614000)
    with pytest.raises(KeyError):
        session.parse(_rec({}), {"topic": "orderbook.50.BTCUSDT", "type": "delta", "data": {"s": "BTCUSDT"}})
    text_u = _v5("delta", 7, [], [])
    text_u["data"]["u"] = "7"
    with pytest.raises(ValueError):
        session.parse(_rec(text_u), text_u)
    bad_side = {
        "topic": "orderBookL2_25.BTCUSD",
        "type": "delta",
        "data": {"insert": [{"price": "1", "symbol": "BTCUSD", "id": 1, "side": "Up", "size": 1}]},
    }
    with pytest.raises(ValueError):
        session.parse(_rec(bad_side), bad_side)
    assert session.parse(_rec({}), {"success": True, "ret_msg": "", "conn_id": "x"}) == ()
