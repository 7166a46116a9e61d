"""Bitfinex venue: the connection-wide sequence of a real SEQ_ALL capture; books, trades, checksums."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest
from venue_harness import DATA, audit, faults, json_records, record

from shared import checksums
from shared.exchanges import rules_for, venue_for_file, venue_for_message, venue_for_url
from shared.exchanges.bitfinex import VENUE, BitfinexSession, _Holes
from shared.model import BookMsg, Event, RawRecord, StreamKey, TradeMsg
from shared.sequencing import INCREASING, PREV_LINK

CAPTURE = DATA / "cryptofeed" / "BITFINEX.ws.11.0"


def test_routing_and_rules() -> None:
    assert venue_for_url("wss://api.bitfinex.com/ws/2") is VENUE
    assert venue_for_file("BITFINEX.ws.11.0") is VENUE
    rules = rules_for("bitfinex")
    assert rules.book_rule is PREV_LINK and rules.trade_rule is INCREASING and rules.checksum is not None
    for rec in list(json_records(CAPTURE))[:50]:
        assert venue_for_message(orjson.loads(rec.raw)) is VENUE
    # Kraken Futures greets with {"event": "info", "version": 1}: not Bitfinex.
    assert venue_for_message({"event": "info", "version": 1}) is not VENUE


def test_capture_sequence_is_unbroken() -> None:
    a = audit(json_records(CAPTURE), VENUE)
    session = a.session
    assert isinstance(session, BitfinexSession)
    assert session.flags == 65536 and session.conn_last == 1670 and session.breaks == 0
    assert not a.malformed
    books = [e for e in a.events if isinstance(e, BookMsg)]
    assert len({e.key for e in books}) == 7 and sum(1 for e in books if e.snapshot) == 7
    assert all(isinstance(e.last_id, int) for e in books)
    assert all(e.prev_id is not None for e in books if not e.snapshot)
    assert faults(a, "gap") == 0 and all(r.gaps == [] for r in a.results.values())
    for kind in ("duplicate", "out_of_order", "crossed_book", "invalid_value", "checksum_mismatch"):
        assert faults(a, kind) == 0, kind
    assert sum(a.verified.values()) == 0  # this capture has no checksum messages (flag 131072 not set)
    trades = [e for e in a.events if isinstance(e, TradeMsg)]
    assert len(trades) == 7 * 30
    t = trades[29]  # snapshots are emitted oldest first
    assert t.key == StreamKey("bitfinex", "BFTUSD", "trades")
    assert (t.trade_id, t.qty, t.price, t.side, t.local_us) == (
        669899159,
        "166.391496",
        "0.076989",
        "buy",
        None,
    )
    # Exact wire text: no float formatting (2.505e-05) of small numbers.
    mna = next(e for e in books if e.key.symbol == "MNABTC" and e.snapshot)
    assert mna.bids[0] == ["0.00002505", "684.8165873"]
    dog = next(e for e in books if e.key.symbol == "DOGUSD" and e.snapshot)
    assert dog.bids[0] == ["277520", "0.00383141"]


def test_dropping_one_message_breaks_every_book_stream_after_it() -> None:
    records = list(json_records(CAPTURE))
    clean = audit(records, VENUE)
    books = [e for e in clean.events if isinstance(e, BookMsg)]
    last_snapshot = max(i for i, e in enumerate(books) if e.snapshot)
    dropped = books[last_snapshot + 5]
    seq = dropped.last_id
    assert not dropped.snapshot and seq is not None
    a = audit([r for r in records if r.line != dropped.line], VENUE)
    assert a.session.breaks == 1
    expected = []
    for key in sorted({e.key for e in books}):
        mine = [e.last_id for e in books if e.key == key and e is not dropped and e.last_id is not None]
        before = [i for i in mine if i < seq]
        after = [i for i in mine if i > seq]
        if after:
            expected.append((key, before[-1], after[0]))
    got = [(k, g.after, g.before) for k, r in sorted(a.results.items()) for g in r.gaps]
    assert got == expected and len(got) >= 2
    assert all(g.missing is None for r in a.results.values() for g in r.gaps)


def _session() -> BitfinexSession:
    s = VENUE.session("wss://api.bitfinex.com/ws/2")
    assert isinstance(s, BitfinexSession)
    for m in (
        {"event": "info", "version": 2, "platform": {"status": 1}},
        {"event": "conf", "status": "OK", "flags": 65536 + 131072},
        {"event": "subscribed", "channel": "book", "chanId": 7, "symbol": "tBTCUSD", "prec": "P0",
         "freq": "F0", "len": "25", "pair": "BTCUSD"},
        {"event": "subscribed", "channel": "trades", "chanId": 8, "symbol": "tBTCUSD", "pair": "BTCUSD"},
        {"event": "subscribed", "channel": "book", "chanId": 9, "symbol": "fUSD", "prec": "P0", "len": "25"},
    ):  # fmt: skip
        assert s.parse(record(m), m) == ()
    return s


def test_book_levels_and_checksum_messages() -> None:
    s = _session()
    snap = [7, [[6000, 2, 1.5], [5999.5, 1, 0.25], [6001, 1, -2], [6002, 3, -0.00001]], 1]
    (e,) = s.parse(record(snap), snap)
    assert isinstance(e, BookMsg) and e.snapshot and e.depth == 25 and e.last_id == 1
    assert e.bids == [["6000", "1.5"], ["5999.5", "0.25"]]
    assert e.asks == [["6001", "2"], ["6002", "0.00001"]]  # exact text, not 1e-05
    assert s.parse(record([7, "hb", 2], 2), [7, "hb", 2]) == ()
    delete = [7, [6002, 0, -1], 3]
    (d,) = s.parse(record(delete, 3), delete)
    assert isinstance(d, BookMsg) and d.asks == [["6002", "0"]] and d.bids == []
    assert (d.prev_id, d.last_id) == (1, 3)
    cs = checksums.bitfinex([("6000", "1.5"), ("5999.5", "0.25")], [("6001", "2")])
    msgs: list[Any] = [
        {"event": "info", "version": 2},
        {"event": "conf", "status": "OK", "flags": 65536 + 131072},
        {
            "event": "subscribed",
            "channel": "book",
            "chanId": 7,
            "symbol": "tBTCUSD",
            "prec": "P0",
            "len": "25",
        },
        snap,
        [7, "hb", 2],
        delete,
        [7, "cs", cs, 4],
        [7, "cs", cs + 1, 5],
    ]
    a = audit([record(m, i + 1) for i, m in enumerate(msgs)], VENUE)
    (r,) = a.results.values()
    assert a.verified[r.key] == 2 and r.faults["checksum_mismatch"] == 1 and r.gaps == []
    assert [f.line for f in r.findings] == [8]


def test_trades_snapshot_te_tu_and_resubscription() -> None:
    s = _session()
    out: list[Event] = []
    for i, m in enumerate(
        [
            [8, [[12, 1700000000300, -0.5, 6000], [11, 1700000000200, 0.25, 6001]], 1],
            [8, "te", [13, 1700000000400, 1, 6002], 2],
            [8, "tu", [13, 1700000000400, 1, 6002], 3],
            [8, [[13, 1700000000400, 1, 6002], [12, 1700000000300, -0.5, 6000]], 4],  # resubscribed
            b'[8, "te", [14, 1700000000500, -2.5e-05, 6003], 5]',  # the text as sent
            [9, [[6000, 1, 1]], 6],  # funding book: not read
        ]
    ):
        out.extend(s.parse(record(m, i + 1), orjson.loads(m) if isinstance(m, bytes) else m))
    assert [(t.trade_id, t.side, t.qty, t.price) for t in out if isinstance(t, TradeMsg)] == [
        (11, "buy", "0.25", "6001"),
        (12, "sell", "0.5", "6000"),
        (13, "buy", "1", "6002"),
        (14, "sell", "2.5e-05", "6003"),
    ]
    assert len(out) == 4 and s.breaks == 0 and s.conn_last == 6


def test_malformed_messages_raise() -> None:
    s = _session()
    for bad in ([7, [6000, 1]], [7, "cs"], [7, [[6000, "x", 1]], 1], [7, [6000, 1, 0], 2]):
        with pytest.raises((ValueError, TypeError)):
            s.parse(record(bad), bad)


# -- the connection sequence under reordering and repeats ----------------------------------


def test_holes_are_the_seqs_not_seen() -> None:
    h = _Holes()
    h.add(5, 9)
    h.add(12, 12)
    assert len(h) == 2 and h.within(1, 5) and h.within(9, 11) and not h.within(10, 11)
    assert not h.within(13, 20) and not h.within(6, 5)
    assert h.fill(7) and (h.lo, h.hi) == ([5, 8, 12], [6, 9, 12])  # split
    assert h.fill(5) and h.fill(9) and h.fill(12) and (h.lo, h.hi) == ([6, 8], [6, 8])
    assert not h.fill(7) and not h.fill(13)  # seen already: repeats
    assert h.fill(6) and h.fill(8) and len(h) == 0 and not h.within(0, 100)


def _book_lines(records: list[RawRecord]) -> dict[int, BookMsg]:
    """The line of every book update of the capture, and its event."""
    s = VENUE.session(records[0].url)
    out: dict[int, BookMsg] = {}
    for rec in records:
        for e in s.parse(rec, orjson.loads(rec.raw)):
            if isinstance(e, BookMsg) and not e.snapshot:
                out[rec.line] = e
    return out


def _findings(a: Any) -> Counter[tuple[str, str]]:
    return Counter((k.symbol, f) for k, r in a.results.items() for f, n in r.faults.items() for _ in range(n))


def _swap(records: list[RawRecord], i: int) -> list[RawRecord]:
    out = list(records)
    out[i], out[i + 1] = out[i + 1], out[i]
    return out


def test_messages_of_different_channels_swapped_leave_every_stream_in_order() -> None:
    records = list(json_records(CAPTURE))
    books = _book_lines(records)
    clean = _findings(audit(records, VENUE))
    pairs = [
        i
        for i in range(len(records) - 1)
        if records[i].line in books
        and records[i + 1].line in books
        and books[records[i].line].key != books[records[i + 1].line].key
    ]
    assert len(pairs) > 100
    for i in pairs[::40]:
        a = audit(_swap(records, i), VENUE)
        assert _findings(a) == clean and a.session.breaks == 0, records[i].line


def test_a_book_message_swapped_with_a_heartbeat_is_in_order() -> None:
    records = list(json_records(CAPTURE))
    books = _book_lines(records)
    i = next(i for i, r in enumerate(records[:-1]) if r.line in books and b'"hb"' in records[i + 1].raw)
    a = audit(_swap(records, i), VENUE)
    assert _findings(a) == _findings(audit(records, VENUE)) and a.session.breaks == 0


def test_a_repeat_of_a_message_held_back_is_a_duplicate() -> None:
    records = list(json_records(CAPTURE))
    books = _book_lines(records)
    i = next(
        i
        for i in range(len(records) - 1)
        if records[i].line in books
        and records[i + 1].line in books
        and books[records[i].line].key != books[records[i + 1].line].key
    )
    late, early = records[i], records[i + 1]
    key = books[early.line].key
    # The early message arrives, then again, then the one before it (of another channel).
    changed = [*records[:i], early, early, late, *records[i + 2 :]]
    a = audit(changed, VENUE)
    assert _findings(a) == _findings(audit(records, VENUE)) + Counter({(key.symbol, "duplicate"): 1})
    assert a.session.breaks == 0


def test_without_seq_all_a_timestamped_repeat_is_a_duplicate() -> None:
    msgs: list[Any] = [
        {"event": "info", "version": 2},
        {"event": "conf", "status": "OK", "flags": 32768},
        {
            "event": "subscribed",
            "channel": "book",
            "chanId": 7,
            "symbol": "tBTCUSD",
            "prec": "P0",
            "len": "25",
        },
        [7, [[6000, 2, 1.5], [6001, 1, -2]], 1700000000000],
        [7, [6000, 1, 1], 1700000000100],
        [7, [6000, 1, 1], 1700000000100],  # repeated: same bytes, same exchange time
        [7, [6000, 2, 1.5], 1700000000200],
        [7, [6000, 1, 1], 1700000000300],  # the same level again, later: not a repeat
    ]
    a = audit([record(m, i + 1) for i, m in enumerate(msgs)], VENUE)
    (r,) = a.results.values()
    assert r.faults["duplicate"] == 1 and [f.line for f in r.findings] == [6]
    assert a.events[-1].raw is not None and a.events[-1].last_id is None
