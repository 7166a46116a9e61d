"""Per-stream auditors on small hand-made streams."""

from __future__ import annotations

from shared.auditors import AuditConfig, BookAuditor, FundingAuditor, TradeAuditor
from shared.exchanges.base import VenueRules
from shared.model import BookMsg, FundingMsg, StreamKey, TradeMsg
from shared.sequencing import CONSECUTIVE, NONE

KEY = StreamKey("test", "X", "book")
TKEY = StreamKey("test", "X", "trades")


def book(snapshot: bool, bids, asks, first=None, last=None, line=1, raw=None) -> BookMsg:  # type: ignore[no-untyped-def]
    return BookMsg(KEY, line, None, snapshot, bids, asks, "f", line, first, last, None, raw=raw)


def trade(i: int, local_us: int | None = None, trade_id: int | str | None = None) -> TradeMsg:
    ident = i if trade_id is None else trade_id
    return TradeMsg(TKEY, i if local_us is None else local_us, None, ident, "1.5", "2", "buy", "f", i)


def trades_in_inputs(*inputs: list[TradeMsg], rule=CONSECUTIVE):  # type: ignore[no-untyped-def]
    """The result of one trade stream read from several inputs, a seam between each."""
    a = TradeAuditor(TKEY, VenueRules("test", trade_rule=rule), AuditConfig())
    for n, batch in enumerate(inputs):
        if n:
            a.seam()
        for t in batch:
            a.feed(t)
    return a.finish()


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


def test_a_trade_file_whose_ids_chain_on_continues_the_recording() -> None:
    r = trades_in_inputs([trade(i) for i in (1, 2, 3)], [trade(i) for i in (4, 5)])
    assert r.messages == 5 and r.faults["gap"] == 0 and r.notes == {}
    # Once the next input continues, a hole in it is a gap of the one recording.
    r = trades_in_inputs([trade(i) for i in (1, 2, 3)], [trade(i) for i in (4, 6)])
    assert r.faults["gap"] == 1


def test_trades_of_another_recording_are_neither_duplicates_nor_a_gap() -> None:
    first = [trade(i) for i in range(1, 11)]
    # A copy of the same stream (its ids already seen), then a recording of a later day.
    r = trades_in_inputs(first, first, [trade(i) for i in (500, 501)])
    assert r.messages == 22
    assert r.faults["duplicate"] == r.faults["gap"] == r.faults["out_of_order"] == 0
    assert r.notes == {"new_recording": 2}
    # A hole held open at the end of the first input is that input's gap.
    r = trades_in_inputs([trade(i) for i in (1, 2, 4)], [trade(i) for i in (100, 101)])
    assert [(g.after, g.before) for g in r.gaps] == [(2, 4)]


def test_id_less_trades_of_an_overlapping_recording_are_not_duplicates() -> None:
    first = [trade(i, trade_id=f"t{i}") for i in range(1, 6)]
    r = trades_in_inputs(first, first, rule=NONE)
    assert r.faults["duplicate"] == 0 and r.notes == {"new_recording": 1}
    # Read in the order recorded, a repeat across the cut is still a duplicate.
    later = [trade(i, trade_id=f"t{i}") for i in (5, 6)]
    r = trades_in_inputs(first, later, rule=NONE)
    assert r.faults["duplicate"] == 1 and r.notes == {}


H = 3600 * 1_000_000


def _funding(inputs: list[list[int]]) -> dict[str, int]:
    a = FundingAuditor(
        StreamKey("test", "X", "funding"), VenueRules("test", funding_interval_us=8 * H), AuditConfig()
    )
    line = 0
    for n, times in enumerate(inputs):
        if n:
            a.seam()
        for t in times:
            line += 1
            a.feed(FundingMsg(a.key, None, None, t, "0.0001", "f", line))
    r = a.finish()
    return {"discontinuities": r.faults["funding_discontinuity"], **r.notes}


def test_funding_of_another_recording_is_not_a_discontinuity() -> None:
    assert _funding([[8 * H, 16 * H], [16 * H, 24 * H]]) == {"discontinuities": 0}  # continues
    assert _funding([[8 * H, 16 * H], [40 * H]]) == {"discontinuities": 0, "new_recording": 1}  # a later day
    assert _funding([[8 * H, 16 * H], [8 * H, 16 * H]]) == {
        "discontinuities": 0,
        "new_recording": 1,
    }  # a copy
    assert _funding([[8 * H, 32 * H]]) == {"discontinuities": 1}  # inside one input: skipped
