"""OKX venue: the real v5 capture verifies every checksum; seqId chains, v3 messages, routing."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from venue_harness import DATA, audit, faults, findings, first_update_at_top, json_records, record, rewrite

from shared import checksums
from shared.exchanges import rules_for, venue_for_file, venue_for_message, venue_for_url
from shared.exchanges.okx import CHECKSUM_END_MS, VENUE, exchange_of
from shared.model import BookMsg, Event, FundingMsg, StreamKey, TradeMsg
from shared.sequencing import INCREASING, PREV_LINK

CAPTURE = DATA / "cryptofeed" / "OKX.ws.1.0"


def _parse(msgs: list[dict[str, Any]]) -> list[Event]:
    session = VENUE.session("wss://ws.okx.com:8443/ws/v5/public")
    return [e for i, m in enumerate(msgs) for e in session.parse(record(m, i + 1), m)]


def test_routing_and_rules() -> None:
    assert venue_for_url("wss://ws.okx.com:8443/ws/v5/public") is VENUE
    assert venue_for_file("OKX.ws.1.0") is VENUE
    first = next(r for r in json_records(CAPTURE) if b'"data"' in r.raw)
    assert venue_for_message(orjson.loads(first.raw)) is VENUE
    for exchange in ("okex", "okex-swap", "okex-futures", "okex-options"):
        rules = rules_for(exchange)
        assert rules.book_rule is PREV_LINK and rules.trade_rule is INCREASING and rules.checksum is not None
    assert exchange_of("BTC-USDT") == "okex"
    assert exchange_of("UNI-USD-SWAP") == "okex-swap"
    assert exchange_of("BTC-USD-220527") == "okex-futures"
    assert exchange_of("BTC-USD-220527-30000-C") == "okex-options"
    assert exchange_of("ETH-USD-220527-1500-P") == "okex-options"


def test_capture_every_checksum_verifies() -> None:
    a = audit(json_records(CAPTURE), VENUE)
    assert not a.malformed
    books = {k: r for k, r in a.results.items() if k.channel == "book"}
    assert sorted(k.label() for k in books) == [
        "okex-futures/BTC-USD-220527/book",
        "okex-swap/UNI-USD-SWAP/book",
        "okex/BTC-USDT/book",
    ]
    assert sum(r.messages for r in books.values()) == 290
    # Every one of the 290 book messages carried a checksum and was compared.
    assert sum(a.verified.values()) == 290
    assert faults(a, "checksum_mismatch") == 0
    assert faults(a, "gap") == 0 and all(r.gaps == [] for r in a.results.values())
    for kind in ("duplicate", "out_of_order", "crossed_book", "invalid_value", "snapshot_mismatch"):
        assert faults(a, kind) == 0, kind
    # Pre-seqId capture: no ids on book events.
    assert all(e.last_id is None and e.prev_id is None for e in a.events if isinstance(e, BookMsg))
    snap = next(e for e in a.events if isinstance(e, BookMsg) and e.snapshot)
    assert all(len(lv) == 2 for lv in snap.bids + snap.asks)  # [px, sz, "0", n] -> [px, sz]
    trades = [e for e in a.events if isinstance(e, TradeMsg)]
    assert len(trades) == 74 and all(isinstance(t.trade_id, int) for t in trades)
    assert (
        trades[0].trade_id == 7849 and trades[0].price == "30218.8" and trades[0].exch_us == 1652459199958000
    )


def test_corrupting_one_quantity_gives_exactly_one_mismatch() -> None:
    records = list(json_records(CAPTURE))
    line = first_update_at_top(records, VENUE, "bids", lambda lv: lv[1] not in ("0", 0.0), with_checksum=True)
    assert line is not None

    def corrupt(obj: Any) -> None:
        level = next(lv for lv in obj["data"][0]["bids"] if lv[1] != "0")
        level[1] = level[1] + "1"

    rewrite(records, line, corrupt)
    a = audit(records, VENUE)
    found = findings(a, "checksum_mismatch")
    assert len(found) == 1 and found[0].line == line
    assert faults(a, "gap") == 0


def _book(
    action: str | None, seq: int | None = None, prev: int | None = None, **extra: Any
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "asks": [["101", "1", "0", "1"]],
        "bids": [["100", "2", "0", "1"]],
        "ts": "1700000000000",
    }
    if seq is not None:
        d["seqId"] = seq
        d["prevSeqId"] = prev
    d.update(extra)
    msg: dict[str, Any] = {"arg": {"channel": "books-l2-tbt", "instId": "BTC-USDT"}, "data": [d]}
    if action is not None:
        msg["action"] = action
    return msg


def test_seqid_chain_and_gap() -> None:
    events = _parse(
        [
            _book("snapshot", 10, -1),
            _book("update", 15, 10),
            _book("update", 15, 15),  # no change: prevSeqId == seqId
            _book("update", 20, 15),
            _book("update", 30, 25),  # 25 is missing
        ]
    )
    books = [e for e in events if isinstance(e, BookMsg)]
    assert [(e.snapshot, e.prev_id, e.last_id) for e in books] == [
        (True, None, 10), (False, 10, 15), (False, 15, 15), (False, 15, 20), (False, 25, 30),
    ]  # fmt: skip
    a = audit(
        [record(m, i + 1) for i, m in enumerate([_book("snapshot", 10, -1), _book("update", 15, 10)])], VENUE
    )
    assert faults(a, "gap") == 0
    msgs = [
        _book("snapshot", 10, -1),
        _book("update", 15, 10),
        _book("update", 20, 15),
        _book("update", 30, 25),
    ]
    a = audit([record(m, i + 1) for i, m in enumerate(msgs)], VENUE)
    (r,) = a.results.values()
    assert [(g.after, g.before, g.missing) for g in r.gaps] == [(20, 30, None)]


def test_keep_alive_repeated_verbatim_is_a_duplicate() -> None:
    # OKX pushes an empty update with prevSeqId == seqId while the book does not change: the
    # ids cannot tell a repeat from the next keep-alive, the bytes (``ts`` among them) can.
    def alive(ts: str) -> dict[str, Any]:
        return _book("update", 15, 15, asks=[], bids=[], ts=ts)

    msgs = [
        _book("snapshot", 10, -1),
        _book("update", 15, 10, ts="1700000000100"),
        alive("1700000000200"),
        alive("1700000000200"),  # repeated verbatim
        alive("1700000000300"),  # the next keep-alive: same ids, another time
        _book("update", 20, 15, ts="1700000000400"),
    ]
    a = audit([record(m, i + 1) for i, m in enumerate(msgs)], VENUE)
    (r,) = a.results.values()
    assert [(f.fault, f.line) for f in r.findings] == [("duplicate", 4)] and r.gaps == []


def test_pre_seqid_update_repeated_verbatim_is_a_duplicate() -> None:
    records = list(json_records(CAPTURE))
    line = first_update_at_top(records, VENUE, "bids", lambda lv: lv[1] != "0", with_checksum=True)
    assert line is not None
    i = next(i for i, r in enumerate(records) if r.line == line)
    clean = audit(records, VENUE)
    a = audit([*records[: i + 1], records[i], *records[i + 1 :]], VENUE)
    assert [(f.fault, f.line) for f in findings(a, "duplicate")] == [("duplicate", line)]
    assert a.verified == clean.verified  # not applied twice; every checksum still verifies
    assert faults(a, "checksum_mismatch") == 0


def test_update_without_seqid_on_sequenced_stream_is_malformed() -> None:
    session = VENUE.session(None)
    session.parse(record(_book("snapshot", 10, -1)), _book("snapshot", 10, -1))
    with pytest.raises(ValueError, match="seqId"):
        session.parse(record(_book("update"), 2), _book("update"))


def test_books5_pushes_are_snapshots_and_checksum_sunset() -> None:
    msg = _book(None)
    msg["arg"]["channel"] = "books5"
    (e,) = _parse([msg])
    assert (
        isinstance(e, BookMsg)
        and e.snapshot
        and e.bids == [["100", "2"]]
        and e.exch_us == 1_700_000_000_000_000
    )
    (e,) = _parse([_book("update", checksum=0)])
    assert isinstance(e, BookMsg) and e.checksum == 0  # before 2026-06-23 a 0 is a real CRC
    (e,) = _parse([_book("update", checksum=0, ts=str(CHECKSUM_END_MS))])
    assert isinstance(e, BookMsg) and e.checksum is None
    with pytest.raises(ValueError):
        _parse([_book("bogus")])
    with pytest.raises((KeyError, TypeError)):
        _parse([{"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": "update", "data": None}])


def test_funding_and_trades() -> None:
    events = _parse(
        [
            {"arg": {"channel": "funding-rate", "instId": "BTC-USD-SWAP"},
             "data": [{"fundingRate": "0.0001", "fundingTime": "1700006400000", "instId": "BTC-USD-SWAP",
                       "ts": "1700000000000"}]},
            {"arg": {"channel": "trades", "instId": "BTC-USDT"},
             "data": [{"instId": "BTC-USDT", "tradeId": "130639474", "px": "42219.9", "sz": "0.12060306",
                       "side": "buy", "ts": "1630048897897"}]},
            {"event": "subscribe", "arg": {"channel": "trades", "instId": "BTC-USDT"}},
        ]
    )  # fmt: skip
    f, t = events
    assert isinstance(f, FundingMsg) and f.key == StreamKey("okex-swap", "BTC-USD-SWAP", "funding")
    assert f.rate == "0.0001" and f.funding_time_us == 1_700_006_400_000_000
    assert isinstance(t, TradeMsg) and (t.trade_id, t.price, t.qty, t.side) == (
        130639474,
        "42219.9",
        "0.12060306",
        "buy",
    )


def test_v3_depth_with_checksum() -> None:
    bids = [["8.8", "96.99999966", "1", "1"], ["8.7", "1", "0", "2"]]
    asks = [["8.9", "5", "0", "1"]]
    cs = checksums.okx([lv[:2] for lv in bids], [lv[:2] for lv in asks])
    partial = {
        "table": "spot/depth_l2_tbt",
        "action": "partial",
        "data": [
            {
                "instrument_id": "XRP-USDT",
                "asks": asks,
                "bids": bids,
                "timestamp": "2020-03-01T00:00:00.123Z",
                "checksum": cs,
            }
        ],
    }
    after = checksums.okx([["8.8", "96.99999966"]], [["8.9", "5"]])
    update = {
        "table": "spot/depth_l2_tbt",
        "action": "update",
        "data": [
            {
                "instrument_id": "XRP-USDT",
                "asks": [],
                "bids": [["8.7", "0", "0", "0"]],
                "timestamp": "2020-03-01T00:00:00.223Z",
                "checksum": after,
            }
        ],
    }
    trade = {
        "table": "swap/trade",
        "data": [
            {
                "instrument_id": "BTC-USD-SWAP",
                "trade_id": "1",
                "price": "9000.1",
                "size": "3",
                "side": "sell",
                "timestamp": "2020-03-01T00:00:01.000Z",
            }
        ],
    }
    assert venue_for_message(partial) is VENUE
    a = audit([record(m, i + 1) for i, m in enumerate([partial, update, trade])], VENUE)
    book = a.results[StreamKey("okex", "XRP-USDT", "book")]
    assert a.verified[StreamKey("okex", "XRP-USDT", "book")] == 2 and book.faults["checksum_mismatch"] == 0
    assert a.events[0].exch_us == 1583020800123000
    t = a.events[-1]
    assert isinstance(t, TradeMsg) and t.key.exchange == "okex-swap" and t.trade_id == 1 and t.qty == "3"
