"""Coinbase venue: the real cryptofeed capture (level2, matches, ticker)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from venue_harness import DATA, audit_events, feed, messages, parse_capture

from shared.exchanges import rules_for, venue_for_file, venue_for_message, venue_for_url
from shared.exchanges.coinbase import VENUE
from shared.model import BookMsg, Event, RawRecord, StreamKey, TradeMsg
from shared.sequencing import CONSECUTIVE, NONE

CAPTURE = DATA / "cryptofeed" / "COINBASE.ws.28.0"


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return parse_capture(VENUE, CAPTURE)


def test_rules_and_routing() -> None:
    rules = rules_for("coinbase")
    assert rules.book_rule is NONE and rules.trade_rule is CONSECUTIVE
    assert venue_for_file("COINBASE.ws.28.0") is VENUE
    assert venue_for_url("wss://ws-feed.pro.coinbase.com") is VENUE
    _, obj = next((r, o) for r, o in messages(CAPTURE) if o.get("type") == "l2update")
    assert venue_for_message(obj) is VENUE


def test_level2_replays_cleanly(events: list[Event]) -> None:
    books = [e for e in events if isinstance(e, BookMsg)]
    assert sum(e.snapshot for e in books) == 10
    updates = [e for e in books if not e.snapshot]
    assert len(updates) == 9719
    assert all(e.raw is not None and e.exch_us is not None for e in updates)
    auditors, results = audit_events(events)
    for key, r in results.items():
        assert r.gaps == [], key
        bad = {k: n for k, n in r.faults.items() if n and k != "timestamp_drift"}
        assert bad == {}, (key, bad)
        assert r.notes == {}, key
    # No sequence numbers: every update is applied (none dropped as a duplicate or early).
    assert sum(r.messages for k, r in results.items() if k.channel == "book") == 10 + 9719
    assert all(a.safe for k, a in auditors.items() if k.channel == "book")


def test_text_prices_and_times(events: list[Event]) -> None:
    snap = next(e for e in events if isinstance(e, BookMsg))
    assert snap.key == StreamKey("coinbase", "BAND-GBP", "book") and snap.snapshot
    assert snap.asks[0] == ["14.8024", "12.77"] and snap.bids[0] == ["14.7693", "27.51"]
    upd = next(e for e in events if isinstance(e, BookMsg) and not e.snapshot)
    assert upd.key.symbol == "SKL-BTC" and upd.asks == [["0.00001306", "660.5"]] and upd.bids == []
    assert upd.exch_us == 1618677817075687


def test_rebuilt_books_match_the_ticker() -> None:
    """The ticker carries best_bid/best_ask; except the first ticker of each product (sent at
    subscription, before the book caught up), every one must equal the rebuilt book."""
    session = VENUE.session(None)
    auditors: dict[str, Any] = {}
    seen: set[str] = set()
    compared = 0
    for rec, obj in messages(CAPTURE):
        if obj.get("type") == "ticker":
            product = obj["product_id"]
            if product in seen:
                a = auditors[product]
                bb, ba = a.book.bids.best(), a.book.asks.best()
                assert bb is not None and ba is not None
                assert (bb[0], ba[0]) == (obj["best_bid"], obj["best_ask"]), rec.line
                compared += 1
            seen.add(product)
        for e in session.parse(rec, obj):
            if isinstance(e, BookMsg):
                feed(auditors, e, rules_for("coinbase"), by=e.key.symbol)
    assert compared == 97


def test_matches_chain_and_taker_side(events: list[Event]) -> None:
    trades = [e for e in events if isinstance(e, TradeMsg)]
    assert len(trades) == 107  # 10 last_match + 97 match
    last_match = trades[0]
    assert last_match.key == StreamKey("coinbase", "BAND-GBP", "trades")
    assert last_match.local_us is None  # history replayed at subscription
    assert (last_match.trade_id, last_match.price, last_match.qty) == (881613, "14.7775", "0.04")
    assert last_match.side == "buy"  # the maker sold
    assert last_match.exch_us == 1618677810244075
    _, results = audit_events(trades)
    assert all(r.gaps == [] and r.faults["duplicate"] == 0 for r in results.values())
    key = StreamKey("coinbase", "SKL-USD", "trades")
    stream = [t for t in trades if t.key == key]
    assert len(stream) == 53
    ids = [t.trade_id for t in stream]
    assert all(isinstance(i, int) for i in ids) and ids == sorted(ids)
    dropped = stream[5]
    # The TradeAuditor reports a hole once more trades than the reorder window follow it.
    last = stream[-1].trade_id
    assert isinstance(last, int)
    extra = [TradeMsg(key, 1, 1, last + i, "0.79", "1", "buy", "t", i) for i in range(1, 70)]
    _, results = audit_events([t for t in trades if t is not dropped] + extra)
    r = results[key]
    after, before = stream[4].trade_id, stream[6].trade_id
    assert isinstance(after, int) and isinstance(before, int)
    assert [(g.after, g.before, g.missing) for g in r.gaps] == [(after, before, before - after - 1)]
    assert sum(len(x.gaps) for k, x in results.items() if k != key) == 0


def test_repeated_update_is_a_duplicate() -> None:
    session = VENUE.session(None)
    msgs = [
        {
            "type": "snapshot",
            "product_id": "BTC-USD",
            "bids": [["100.00", "1.0"]],
            "asks": [["101.00", "2.0"]],
        },
        {
            "type": "l2update",
            "product_id": "BTC-USD",
            "changes": [["buy", "100.50", "0.5"]],
            "time": "2021-04-17T16:43:37.075687Z",
        },
    ]
    events: list[Event] = []
    for i, m in enumerate([*msgs, msgs[1]]):
        events.extend(session.parse(RawRecord("t", i + 1, 1, "json", orjson.dumps(m)), m))
    auditors, results = audit_events(events)
    (r,) = results.values()
    assert r.faults["duplicate"] == 1 and r.gaps == []
    (a,) = auditors.values()
    assert a.book.bids.sorted_levels() == [("100.50", "0.5"), ("100.00", "1.0")]


def test_ignored_and_malformed_messages() -> None:
    session = VENUE.session(None)
    rec = RawRecord("t", 1, 1, "json")
    assert session.parse(rec, {"type": "subscriptions", "channels": []}) == ()
    assert session.parse(rec, {"type": "ticker", "product_id": "BTC-USD", "trade_id": 1}) == ()
    assert session.parse(rec, {"type": "heartbeat", "product_id": "BTC-USD", "sequence": 1}) == ()
    with pytest.raises(ValueError):
        session.parse(rec, {"type": "l2update", "product_id": "BTC-USD", "changes": [["bid", "1", "1"]]})
    with pytest.raises(ValueError):
        session.parse(
            rec, {"type": "match", "product_id": "BTC-USD", "trade_id": "7", "price": "1", "size": "1"}
        )
    with pytest.raises(KeyError):
        session.parse(rec, {"type": "snapshot", "product_id": "BTC-USD", "bids": []})
