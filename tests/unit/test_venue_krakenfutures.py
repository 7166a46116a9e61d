"""Kraken Futures venue (``cryptofacilities``): the real cryptofeed capture."""

from __future__ import annotations

from typing import Any

import pytest
from venue_harness import DATA, audit_events, feed, messages, parse_capture

from shared.exchanges import rules_for, venue_for_file, venue_for_message, venue_for_url
from shared.exchanges.krakenfutures import VENUE
from shared.model import BookMsg, Event, RawRecord, StreamKey, TradeMsg
from shared.sequencing import CONSECUTIVE

CAPTURE = DATA / "cryptofeed" / "KRAKEN_FUTURES.ws.1.0"


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return parse_capture(VENUE, CAPTURE)


def test_rules_and_routing() -> None:
    rules = rules_for("cryptofacilities")
    assert rules.book_rule is CONSECUTIVE and rules.trade_rule is CONSECUTIVE
    assert venue_for_file("KRAKEN_FUTURES.ws.1.0") is VENUE
    assert venue_for_url("wss://futures.kraken.com/ws/v1") is VENUE
    _, obj = next((r, o) for r, o in messages(CAPTURE) if o.get("feed") == "book" and "seq" in o)
    assert venue_for_message(obj) is VENUE


def test_seq_chain_is_complete(events: list[Event]) -> None:
    books = [e for e in events if isinstance(e, BookMsg)]
    snapshots = [e for e in books if e.snapshot]
    deltas = [e for e in books if not e.snapshot]
    assert len(snapshots) == 10 and len(deltas) == 7014
    assert all(e.first_id == e.last_id for e in deltas)
    auditors, results = audit_events(events)
    books_seen = 0
    for key, r in results.items():
        assert r.gaps == [], key
        bad = {k: n for k, n in r.faults.items() if n and k != "timestamp_drift"}
        assert bad == {}, (key, bad)
        assert r.notes == {}, key
        if key.channel == "book":
            books_seen += 1
            a = auditors[key]
            assert a.safe and not a.seq.pending
            assert a.seq.last == max(e.last_id for e in deltas if e.key == key)
    assert books_seen == 10
    # Every one of the 7014 deltas went through the seq == previous seq + 1 check.
    assert sum(r.messages for k, r in results.items() if k.channel == "book") == 10 + 7014


def test_levels_keep_json_numbers(events: list[Event]) -> None:
    snap = next(e for e in events if isinstance(e, BookMsg) and e.snapshot)
    assert snap.key == StreamKey("cryptofacilities", "FI_BCHUSD_210730", "book")
    assert snap.last_id == 91192 and snap.exch_us == 1626994925378000
    assert snap.bids[0] == [439.3, 20108.0] and snap.asks[0] == [439.6, 50.0]
    delta = next(e for e in events if isinstance(e, BookMsg) and not e.snapshot)
    assert delta.key.symbol == "PI_ETHUSD" and delta.bids == [] and delta.asks == [[2004.85, 4787.0]]
    assert delta.first_id == delta.last_id == 26660860


def test_rebuilt_books_match_every_ticker() -> None:
    """ticker_lite carries the best bid and ask: the rebuilt book agrees with all of them."""
    session = VENUE.session(None)
    auditors: dict[str, Any] = {}
    compared = 0
    for rec, obj in messages(CAPTURE):
        if obj.get("feed") == "ticker_lite" and "bid" in obj:
            a = auditors[obj["product_id"]]
            bb, ba = a.book.bids.best(), a.book.asks.best()
            assert bb is not None and ba is not None
            assert (bb[0], ba[0]) == (obj["bid"], obj["ask"]), rec.line
            compared += 1
        for e in session.parse(rec, obj):
            if isinstance(e, BookMsg):
                feed(auditors, e, by=e.key.symbol)
    assert compared == 107


def test_dropping_one_delta_gives_one_gap(events: list[Event]) -> None:
    key = StreamKey("cryptofacilities", "PI_LTCUSD", "book")
    stream = [e for e in events if isinstance(e, BookMsg) and e.key == key and not e.snapshot]
    dropped = stream[100]
    _, results = audit_events([e for e in events if e is not dropped])
    r = results[key]
    assert r.faults["gap"] == 1
    assert [(g.after, g.before, g.missing) for g in r.gaps] == [(dropped.last_id - 1, dropped.last_id + 1, 1)]
    assert sum(x.faults["gap"] for k, x in results.items() if k != key) == 0


def test_trades_chain_from_snapshot_to_live(events: list[Event]) -> None:
    trades = [e for e in events if isinstance(e, TradeMsg)]
    assert len(trades) == 1003  # 10 x 100 replayed at subscription + 3 live
    history = [t for t in trades if t.local_us is None]
    assert len(history) == 1000
    first = trades[0]
    assert first.key == StreamKey("cryptofacilities", "FI_BCHUSD_210730", "trades")
    assert first.trade_id == 1388 and first.side in ("buy", "sell")
    live = [t for t in trades if t.local_us is not None]
    assert [(t.key.symbol, t.trade_id) for t in live] == [
        ("PI_LTCUSD", 5956),
        ("FI_BCHUSD_210730", 1488),
        ("PI_ETHUSD", 103832),
    ]
    _, results = audit_events(trades)
    assert all(r.gaps == [] and r.faults["duplicate"] == 0 for r in results.values())
    dropped = next(t for t in trades if t.key.symbol == "PI_ETHUSD" and t.trade_id == 103740)
    _, results = audit_events([t for t in trades if t is not dropped])
    gaps = [(g.after, g.before, g.missing) for r in results.values() for g in r.gaps]
    assert gaps == [(103739, 103741, 1)]


def test_ignored_and_malformed_messages() -> None:
    session = VENUE.session(None)
    rec = RawRecord("t", 1, 1, "json")
    assert session.parse(rec, {"event": "subscribed", "feed": "book", "product_ids": ["PI_XBTUSD"]}) == ()
    assert session.parse(rec, {"feed": "heartbeat", "time": 1}) == ()
    assert session.parse(rec, {"feed": "ticker_lite", "product_id": "PI_XBTUSD", "bid": 1.0}) == ()
    with pytest.raises(ValueError):
        session.parse(
            rec, {"feed": "book", "product_id": "PI_XBTUSD", "side": "up", "seq": 1, "price": 1.0, "qty": 1.0}
        )
    with pytest.raises(ValueError):
        session.parse(
            rec,
            {"feed": "book", "product_id": "PI_XBTUSD", "side": "buy", "seq": "1", "price": 1.0, "qty": 1.0},
        )
    with pytest.raises(KeyError):
        session.parse(rec, {"feed": "book_snapshot", "product_id": "PI_XBTUSD", "seq": 1, "bids": []})
