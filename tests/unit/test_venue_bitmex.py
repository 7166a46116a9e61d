"""BitMEX venue: the real cryptofeed capture (orderBookL2 keyed by id, quote, trade)."""

from __future__ import annotations

from typing import Any

import pytest
from venue_harness import DATA, audit_events, feed, messages, parse_capture, record
from venue_harness import audit as harness_audit

from shared.exchanges import rules_for, venue_for_file, venue_for_message, venue_for_url
from shared.exchanges.bitmex import VENUE
from shared.model import BookMsg, Event, RawRecord, StreamKey, TradeMsg
from shared.sequencing import NONE

CAPTURE = DATA / "cryptofeed" / "BITMEX.ws.1.0"


def _book(action: str, rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"table": "orderBookL2", "action": action, "data": rows, **extra}


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return parse_capture(VENUE, CAPTURE)


def test_rules_and_routing() -> None:
    rules = rules_for("bitmex")
    assert rules.book_rule is NONE and rules.trade_rule is NONE
    assert venue_for_file("BITMEX.ws.1.0") is VENUE
    assert venue_for_url("wss://www.bitmex.com/realtime") is VENUE
    _, obj = next((r, o) for r, o in messages(CAPTURE) if o.get("table") == "orderBookL2")
    assert venue_for_message(obj) is VENUE


def test_capture_replays_with_every_id_resolved(events: list[Event]) -> None:
    books = [e for e in events if isinstance(e, BookMsg)]
    assert sum(e.snapshot for e in books) == 10
    assert len(books) == 1979  # one symbol per message in this capture
    # Identical bytes are not duplicates here (delete, re-insert, delete repeats them).
    assert all(e.raw is None for e in books)
    for e in books:
        for level in e.bids + e.asks:
            assert isinstance(level, list) and len(level) == 2
            assert not (isinstance(level[0], str) and level[0].startswith("id:")), e.line
    auditors, results = audit_events(events)
    for key, r in results.items():
        # invalid_value would flag an update/delete whose id no partial or insert priced.
        bad = {k: n for k, n in r.faults.items() if n and k != "timestamp_drift"}
        assert bad == {}, (key, bad)
        assert r.notes == {}, key
    assert sum(r.messages for k, r in results.items() if k.channel == "book") == 1979
    assert all(a.safe for k, a in auditors.items() if k.channel == "book")


def test_rebuilt_books_match_every_quote() -> None:
    """The quote table's last row per symbol is the best bid/ask at that moment: the rebuilt
    book (id -> price translation included) must agree with every one."""
    session = VENUE.session(None)
    auditors: dict[str, Any] = {}
    compared = 0
    for rec, obj in messages(CAPTURE):
        if obj.get("table") == "quote" and obj.get("action") == "insert":
            last = {row["symbol"]: (row["bidPrice"], row["askPrice"]) for row in obj["data"]}
            for symbol, top in last.items():
                a = auditors[symbol]
                bb, ba = a.book.bids.best(), a.book.asks.best()
                assert bb is not None and ba is not None
                assert (bb[0], ba[0]) == top, (rec.line, symbol)
                compared += 1
        for e in session.parse(rec, obj):
            if isinstance(e, BookMsg):
                feed(auditors, e, rules_for("bitmex"), by=e.key.symbol)
    assert compared == 83


def test_update_and_delete_rows_take_the_price_of_their_id() -> None:
    session = VENUE.session(None)
    rec = RawRecord("t", 1, 1, "json")
    partial = _book(
        "partial",
        [
            {"symbol": "XBTUSD", "id": 8799678650, "side": "Sell", "size": 10, "price": 32135},
            {"symbol": "XBTUSD", "id": 8799678700, "side": "Buy", "size": 20, "price": 32130},
        ],
        filter={"symbol": "XBTUSD"},
    )
    (snap,) = session.parse(rec, partial)
    assert isinstance(snap, BookMsg) and snap.snapshot
    assert snap.asks == [[32135, 10]] and snap.bids == [[32130, 20]]
    (upd,) = session.parse(
        rec, _book("update", [{"symbol": "XBTUSD", "id": 8799678650, "side": "Sell", "size": 4}])
    )
    assert isinstance(upd, BookMsg) and upd.asks == [[32135, 4]] and not upd.snapshot
    (dele,) = session.parse(rec, _book("delete", [{"symbol": "XBTUSD", "id": 8799678700, "side": "Buy"}]))
    assert isinstance(dele, BookMsg) and dele.bids == [[32130, 0]]
    # The same delete again (a repeated message) takes the price the id had: it deletes
    # nothing, and is not an invalid level.
    (again,) = session.parse(rec, _book("delete", [{"symbol": "XBTUSD", "id": 8799678700, "side": "Buy"}]))
    assert isinstance(again, BookMsg) and again.bids == [[32130, 0]] and again.raw is None
    # The id is forgotten after its delete: a later update for it cannot be priced.
    (stale,) = session.parse(
        rec, _book("update", [{"symbol": "XBTUSD", "id": 8799678700, "side": "Buy", "size": 1}])
    )
    assert isinstance(stale, BookMsg) and stale.bids == [["id:8799678700", 1]]
    _, results = audit_events([snap, upd, dele, again, stale])
    (r,) = results.values()
    assert r.faults["invalid_value"] == 1


def test_rows_with_their_time_make_a_repeat_a_duplicate() -> None:
    def row(size: int, ts: str) -> dict[str, Any]:
        return {"symbol": "XBTUSD", "id": 8799678650, "side": "Sell", "size": size, "timestamp": ts}

    msgs = [
        _book(
            "partial", [{**row(10, "2021-07-22T22:36:10.000Z"), "price": 32135}], filter={"symbol": "XBTUSD"}
        ),
        _book("update", [row(4, "2021-07-22T22:36:10.100Z")]),
        _book("update", [row(4, "2021-07-22T22:36:10.100Z")]),  # repeated: same bytes, same time
        _book("update", [row(7, "2021-07-22T22:36:10.200Z")]),
        _book("update", [row(4, "2021-07-22T22:36:10.300Z")]),  # the same size again, later
    ]
    a = harness_audit([record(m, i + 1) for i, m in enumerate(msgs)], VENUE)
    (r,) = a.results.values()
    assert [(f.fault, f.line) for f in r.findings] == [("duplicate", 3)]


def test_messages_are_split_by_symbol_and_empty_partials_reset() -> None:
    session = VENUE.session(None)
    rec = RawRecord("t", 1, 1, "json")
    empty = session.parse(rec, _book("partial", [], filter={"symbol": "TRXU21"}))
    assert len(empty) == 1 and isinstance(empty[0], BookMsg)
    assert empty[0].key.symbol == "TRXU21" and empty[0].snapshot and empty[0].bids == [] == empty[0].asks
    both = session.parse(
        rec,
        _book(
            "insert",
            [
                {
                    "symbol": "XBTUSD",
                    "id": 1,
                    "side": "Buy",
                    "size": 1,
                    "price": 10.5,
                    "timestamp": "2021-07-22T22:36:10.014Z",
                },
                {"symbol": "ETHUSD", "id": 2, "side": "Sell", "size": 2, "price": 20.5},
                {"symbol": "XBTUSD", "id": 3, "side": "Sell", "size": 3, "price": 11.5},
            ],
        ),
    )
    assert [(e.key.symbol, e.bids, e.asks) for e in both if isinstance(e, BookMsg)] == [
        ("XBTUSD", [[10.5, 1]], [[11.5, 3]]),
        ("ETHUSD", [], [[20.5, 2]]),
    ]
    assert both[0].exch_us == 1626993370014000 and both[1].exch_us is None


def test_trades(events: list[Event]) -> None:
    trades = [e for e in events if isinstance(e, TradeMsg)]
    assert len(trades) == 27  # 10 replayed by the partials + 17 live
    assert sum(t.local_us is None for t in trades) == 10
    live = next(t for t in trades if t.local_us is not None)
    assert live.key == StreamKey("bitmex", "UNIUSDT", "trades")
    assert (live.trade_id, live.price, live.qty, live.side) == (
        "39744121-c20e-44ba-8cc8-a6b8cdf72885",
        17.297,
        52,
        "buy",
    )
    assert live.exch_us == 1626993370014000
    _, results = audit_events([*trades, live])
    assert sum(r.faults["duplicate"] for r in results.values()) == 1


def test_ignored_and_malformed_messages() -> None:
    session = VENUE.session(None)
    rec = RawRecord("t", 1, 1, "json")
    assert session.parse(rec, {"info": "Welcome to the BitMEX Realtime API.", "version": "2021-07-22"}) == ()
    assert session.parse(rec, {"success": True, "subscribe": "orderBookL2:XBTUSD"}) == ()
    assert session.parse(rec, {"table": "quote", "action": "insert", "data": []}) == ()
    with pytest.raises(ValueError):
        session.parse(
            rec, _book("insert", [{"symbol": "XBTUSD", "id": 1, "side": "Both", "size": 1, "price": 1}])
        )
    with pytest.raises(KeyError):
        session.parse(rec, _book("insert", [{"symbol": "XBTUSD", "side": "Buy", "size": 1, "price": 1}]))
    with pytest.raises(ValueError):
        session.parse(rec, _book("replace", []))
