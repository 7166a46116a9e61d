"""Deribit venue: real cryptofeed captures through the session and the auditors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from venue_harness import DATA, audit_events, feed, messages, parse_capture

from shared.exchanges import rules_for, venue_for_file, venue_for_message, venue_for_url
from shared.exchanges.deribit import VENUE
from shared.model import BookMsg, Event, RawRecord, StreamKey, TradeMsg
from shared.sequencing import PREV_LINK

WS30 = DATA / "cryptofeed_deribit" / "DERIBIT.ws.30.0"
SINGLE = DATA / "cryptofeed_deribit" / "DERIBIT-5dd9ce.0"


def _msg(channel: str, data: Any) -> tuple[RawRecord, dict[str, Any]]:
    obj = {"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel, "data": data}}
    return RawRecord("t", 1, 1_000_000, "json", orjson.dumps(obj)), obj


def test_rules_and_routing() -> None:
    rules = rules_for("deribit")
    assert rules.book_rule is PREV_LINK
    assert rules.trade_rule.name == "consecutive"
    assert venue_for_file("DERIBIT.ws.30.0") is VENUE
    assert venue_for_file("DERIBIT-5dd9ce.0") is VENUE
    assert venue_for_url("wss://www.deribit.com/ws/api/v2") is VENUE
    _, obj = _msg("book.BTC-PERPETUAL.raw", {})
    assert venue_for_message(obj) is VENUE


@pytest.mark.parametrize(("path", "changes"), [(WS30, 46), (SINGLE, 177)])
def test_chained_captures(path: Path, changes: int) -> None:
    events = parse_capture(VENUE, path)
    books = [e for e in events if isinstance(e, BookMsg)]
    assert sum(e.snapshot for e in books) == 10
    auditors, results = audit_events(events)
    assert len(results) == 10
    checked = 0
    for key, r in results.items():
        assert r.gaps == [], key
        bad = {k: n for k, n in r.faults.items() if n and k != "timestamp_drift"}
        assert bad == {}, (key, bad)
        assert r.notes == {}, key  # nothing dropped before a snapshot
        deltas = [e for e in books if e.key == key and not e.snapshot]
        checked += len(deltas)
        seq = auditors[key].seq
        assert seq is not None and not seq.pending
        assert seq.last == (
            deltas[-1].last_id if deltas else books[[e.key for e in books].index(key)].last_id
        )
        assert auditors[key].safe
    # Every change went through the prev_change_id check: the documented count.
    assert checked == changes


def test_levels_are_price_amount_pairs_with_numbers_as_decoded() -> None:
    first = next(e for e in parse_capture(VENUE, WS30) if isinstance(e, BookMsg) and e.bids)
    assert first.key == StreamKey("deribit", "ETH-30APR21-2560-P", "book")
    assert first.snapshot and first.prev_id is None and first.last_id == 9272308923
    assert first.bids[0] == [0.083, 5.0]
    assert first.exch_us == 1618677845542000
    delete = next(e for e in parse_capture(VENUE, WS30) if isinstance(e, BookMsg) and e.line == 31)
    assert delete.asks == [[0.0025, 0]] and delete.bids == [] and not delete.snapshot
    assert delete.prev_id == 29357173484 and delete.last_id == 29357197952


@pytest.mark.parametrize("path", [WS30, SINGLE])
def test_rebuilt_books_match_every_ticker(path: Path) -> None:
    """Deribit tickers carry the best bid/ask with amounts: the rebuilt book must agree with
    every one of them, as of the ticker's exchange time."""
    session = VENUE.session(None)
    auditors: dict[str, Any] = {}
    states: dict[str, list[tuple[int, tuple[Any, ...]]]] = {}
    tickers: list[tuple[str, int, tuple[Any, ...]]] = []
    for rec, obj in messages(path):
        params = obj.get("params") or {}
        if str(params.get("channel", "")).startswith("ticker."):
            d = params["data"]
            fields = ("best_bid_price", "best_ask_price", "best_bid_amount", "best_ask_amount")
            tickers.append(
                (d["instrument_name"], d["timestamp"] * 1000, tuple(d.get(f) or 0 for f in fields))
            )
        for e in session.parse(rec, obj):
            assert isinstance(e, BookMsg)
            a = feed(auditors, e, rules_for("deribit"), by=e.key.symbol)
            bb, ba = a.book.bids.best(), a.book.asks.best()
            top = (bb[0] if bb else 0, ba[0] if ba else 0, bb[1] if bb else 0, ba[1] if ba else 0)
            assert e.exch_us is not None
            states.setdefault(e.key.symbol, []).append((e.exch_us, top))
    assert len(tickers) > 80
    for symbol, ts, top in tickers:
        before = [s for t, s in states[symbol] if t <= ts]
        assert before and before[-1] == top, (symbol, ts)


def test_dropping_one_change_gives_one_gap() -> None:
    events = parse_capture(VENUE, SINGLE)
    key = StreamKey("deribit", "ETH-9APR21-1950-C", "book")
    stream = [e for e in events if isinstance(e, BookMsg) and e.key == key and not e.snapshot]
    assert len(stream) > 10
    dropped = stream[5]
    _, results = audit_events([e for e in events if e is not dropped])
    r = results[key]
    assert r.faults["gap"] == 1 and len(r.gaps) == 1
    gap = r.gaps[0]
    assert (gap.after, gap.before, gap.missing) == (stream[4].last_id, stream[6].last_id, None)
    assert gap.after == dropped.prev_id
    assert sum(x.faults["gap"] for k, x in results.items() if k != key) == 0


def test_snapshot_without_type_and_bad_actions() -> None:
    session = VENUE.session(None)
    rec, obj = _msg(
        "book.BTC-PERPETUAL.100ms",
        {"change_id": 5, "timestamp": 1, "bids": [["new", 100.5, 10]], "asks": [["new", 101, 3]]},
    )
    (m,) = session.parse(rec, obj)
    assert isinstance(m, BookMsg) and m.snapshot and m.last_id == 5 and m.bids == [[100.5, 10]]
    rec, obj = _msg(
        "book.BTC-PERPETUAL.raw",
        {
            "type": "change",
            "change_id": 7,
            "prev_change_id": 5,
            "timestamp": 2,
            "bids": [["remove", 100.5, 0]],
            "asks": [],
        },
    )
    with pytest.raises(ValueError):
        session.parse(rec, obj)
    rec, obj = _msg(
        "book.BTC-PERPETUAL.raw",
        {"type": "change", "change_id": "7", "prev_change_id": 5, "timestamp": 2, "bids": [], "asks": []},
    )
    with pytest.raises(ValueError):
        session.parse(rec, obj)
    rec, obj = _msg("book.BTC-PERPETUAL.raw", {"type": "change", "bids": []})
    with pytest.raises(KeyError):
        session.parse(rec, obj)


def test_no_events_for_tickers_grouped_books_and_answers() -> None:
    session = VENUE.session(None)
    for channel, data in [
        ("ticker.BTC-PERPETUAL.raw", {"current_funding": 0.0001, "funding_8h": 0.0003}),
        ("book.BTC-PERPETUAL.none.10.100ms", {"change_id": 1, "bids": [[1, 2]], "asks": []}),
    ]:
        rec, obj = _msg(channel, data)
        assert session.parse(rec, obj) == ()
    answer = {"jsonrpc": "2.0", "id": 0, "result": ["book.BTC-PERPETUAL.raw"], "usIn": 1, "usOut": 2}
    assert session.parse(RawRecord("t", 1, None, "json"), answer) == ()


def test_trades_use_trade_seq() -> None:
    session = VENUE.session(None)

    def trade(seq: int) -> dict[str, Any]:
        return {
            "trade_seq": seq,
            "trade_id": f"ETH-{1000 + seq}",
            "timestamp": 1_617_644_856_000 + seq,
            "tick_direction": 0,
            "price": 0.0795,
            "mark_price": 0.08,
            "instrument_name": "ETH-9APR21-1950-C",
            "index_price": 2100.1,
            "direction": "sell",
            "amount": 4.0,
        }

    events: list[Event] = []
    # 4 is missing; more trades follow than the reorder window holds back.
    for seqs in ([1, 2], [3], list(range(5, 80))):
        rec, obj = _msg("trades.ETH-9APR21-1950-C.raw", [trade(s) for s in seqs])
        events.extend(session.parse(rec, obj))
    assert all(isinstance(e, TradeMsg) for e in events)
    t = events[0]
    assert isinstance(t, TradeMsg)
    assert (t.trade_id, t.price, t.qty, t.side, t.exch_us) == (1, 0.0795, 4.0, "sell", 1_617_644_856_001_000)
    assert t.key == StreamKey("deribit", "ETH-9APR21-1950-C", "trades")
    _, results = audit_events(events)
    (r,) = results.values()
    assert r.messages == 78
    assert [(g.after, g.before, g.missing) for g in r.gaps] == [(3, 5, 1)]
