"""Per-stream auditors on small hand-made streams."""

from __future__ import annotations

from shared.auditors import AuditConfig, BookAuditor, TradeAuditor
from shared.exchanges.base import VenueRules
from shared.model import BookMsg, StreamKey, TradeMsg
from shared.sequencing import CONSECUTIVE, NONE

KEY = StreamKey("test", "X", "book")
TKEY = StreamKey("test", "X", "trades")


def book(snapshot: bool, bids, asks, first=None, last=None, line=1, raw=None) -> BookMsg:  # type: ignore[no-untyped-def]
    return BookMsg(KEY, line, None, snapshot, bids, asks, "f", line, first, last, None, raw=raw)


def trade(i: int) -> TradeMsg:
    return TradeMsg(TKEY, i, None, i, "1.5", "2", "buy", "f", i)


def test_a_trade_gap_at_the_very_end_is_still_reported() -> None:
    a = TradeAuditor(TKEY, VenueRules("test", trade_rule=CONSECUTIVE), AuditConfig())
    for i in (1, 2, 3, 5):
        a.feed(trade(i))
    result = a.finish()
    assert result.faults["gap"] == 1
    assert [(g.after, g.before, g.missing) for g in result.gaps] == [(3, 5, 1)]


def test_id_less_book_duplicates_are_byte_identical_repeats() -> None:
    a = BookAuditor(KEY, VenueRules("test", book_rule=NONE), AuditConfig())
    a.feed(book(True, [["1", "1"]], [["2", "1"]]))
    a.feed(book(False, [["1", "3"]], [], raw=b"m1", line=2))
    a.feed(book(False, [["1", "3"]], [], raw=b"m1", line=3))
    a.feed(book(False, [["1", "4"]], [], raw=b"m2", line=4))
    r = a.finish()
    assert r.faults["duplicate"] == 1 and r.messages == 4
    assert a.book.bids.top(1) == [("1", "4")]


def test_disconnect_makes_the_book_unknown_until_the_next_snapshot() -> None:
    a = BookAuditor(KEY, VenueRules("test", book_rule=CONSECUTIVE), AuditConfig())
    a.feed(book(True, [["1", "1"]], [["2", "1"]], last=10))
    a.feed(book(False, [["1", "2"]], [], first=11, last=11))
    a.disconnect("f", 3, None)
    assert not a.safe
    a.feed(book(False, [["3", "1"]], [], first=12, last=12))  # unknown state: not applied
    assert a.book.bids.top(1) == [("1", "2")]
    a.feed(book(True, [["1", "1"]], [["2", "1"]], last=20))
    assert a.safe
    r = a.finish()
    assert r.faults["disconnect"] == 1 and r.faults["gap"] == 0 and r.notes == {"before_snapshot": 1}


def test_a_snapshot_that_disagrees_with_the_live_book_is_a_mismatch() -> None:
    a = BookAuditor(KEY, VenueRules("test", book_rule=CONSECUTIVE), AuditConfig())
    a.feed(book(True, [["1", "1"]], [["2", "1"]], last=10))
    a.feed(book(False, [["1", "2"]], [], first=11, last=11))
    a.feed(book(True, [["1", "2"]], [["2", "1"]], last=11))  # agrees
    a.feed(book(False, [["1", "5"]], [], first=12, last=12))
    a.feed(book(True, [["1", "6"]], [["2", "1"]], last=12))  # silent desync
    r = a.finish()
    assert r.faults["snapshot_mismatch"] == 1
    (f,) = [f for f in r.findings if f.fault == "snapshot_mismatch"]
    assert f.detail["first"] == [{"side": "bid", "price": "1", "snapshot": "6", "book": "5"}]


def test_crossed_book_is_one_finding_per_episode() -> None:
    a = BookAuditor(KEY, VenueRules("test", book_rule=CONSECUTIVE), AuditConfig())
    a.feed(book(True, [["1", "1"]], [["2", "1"]], last=0))
    a.feed(book(False, [["3", "1"]], [], first=1, last=1))
    a.feed(book(False, [["3", "2"]], [], first=2, last=2))
    a.feed(book(False, [["3", "0"]], [], first=3, last=3))
    a.feed(book(False, [["4", "1"]], [], first=4, last=4))
    assert a.finish().faults["crossed_book"] == 2
