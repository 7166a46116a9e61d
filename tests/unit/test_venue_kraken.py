"""Kraken venue: the real v1 book capture verifies every checksum; trades (WS and REST); v2."""

from __future__ import annotations

from typing import Any

import orjson
from venue_harness import DATA, audit, faults, findings, first_update_at_top, json_records, record, rewrite

from shared import checksums
from shared.exchanges import rules_for, venue_for_file, venue_for_message, venue_for_url
from shared.exchanges.kraken import VENUE
from shared.formats.readers import read_json_doc
from shared.model import BookMsg, StreamKey, TradeMsg
from shared.sequencing import CONSECUTIVE, NONE

BOOKS = DATA / "cryptofeed" / "KRAKEN.ws.50.0"
TRADES = DATA / "cryptofeed" / "KRAKEN.ws.48.0"
REST = DATA / "nautilus" / "http_trades.json"


def test_routing_and_rules() -> None:
    assert venue_for_url("wss://ws.kraken.com") is VENUE
    assert venue_for_url("wss://ws.kraken.com/v2") is VENUE
    assert venue_for_url("wss://futures.kraken.com/ws/v1") is not VENUE
    assert venue_for_file("KRAKEN.ws.50.0") is VENUE
    assert venue_for_file("KRAKEN_FUTURES.ws.1.0") is not VENUE
    rec = next(r for r in json_records(BOOKS) if r.raw.startswith(b"["))
    assert venue_for_message(orjson.loads(rec.raw)) is VENUE
    assert venue_for_message(orjson.loads(next(json_records(REST, read_json_doc)).raw)) is VENUE
    rules = rules_for("kraken")
    assert rules.book_rule is NONE and rules.trade_rule is CONSECUTIVE and rules.checksum is not None


def test_capture_every_checksum_verifies() -> None:
    a = audit(json_records(BOOKS), VENUE)
    assert not a.malformed
    books = [e for e in a.events if isinstance(e, BookMsg)]
    assert len({e.key for e in books}) == 10 and all(e.depth == 1000 for e in books)
    assert sum(1 for e in books if e.snapshot) == 10
    assert sum(1 for e in books if e.checksum is not None) == 4269
    # Every checksum carried was compared: the book was never unsafe.
    assert sum(a.verified.values()) == 4269
    assert faults(a, "checksum_mismatch") == 0
    assert faults(a, "gap") == 0
    for kind in ("duplicate", "crossed_book", "invalid_value", "snapshot_mismatch"):
        assert faults(a, kind) == 0, kind
    # An update split over two objects ({"a": ...}, {"b": ..., "c": ...}) is one message.
    both = [e for e in books if not e.snapshot and e.bids and e.asks]
    assert both and all(e.checksum is not None and e.exch_us is not None for e in both)


def test_corrupting_one_quantity_gives_exactly_one_mismatch() -> None:
    records = list(json_records(BOOKS))
    target = first_update_at_top(records, VENUE, "asks", lambda lv: bool(lv[1].strip("0.")), books_only=True)
    assert target is not None

    def corrupt(obj: Any) -> None:
        level = next(lv for part in obj[1:-2] for lv in part.get("a", []) if lv[1].strip("0."))
        level[1] = level[1] + "1"

    rewrite(records, target, corrupt)
    corrupted = audit(records, VENUE)
    found = findings(corrupted, "checksum_mismatch")
    assert len(found) == 1 and found[0].line == target


def test_ws_trades_and_ticker() -> None:
    a = audit(json_records(TRADES), VENUE)
    trades = [e for e in a.events if isinstance(e, TradeMsg)]
    assert trades and all(t.trade_id is None and t.side in ("buy", "sell") for t in trades)
    t = trades[0]
    assert (t.key, t.price, t.qty, t.side, t.exch_us) == (
        StreamKey("kraken", "XMR/USD", "trades"),
        "354.11000000",
        "0.89594024",
        "sell",
        1618678142557535,
    )
    assert not a.malformed and all(not any(r.faults.values()) for r in a.results.values())
    ticker = [1668, {"a": ["13.2539", 35, "35.7"], "b": ["13.2329", 185, "185.1"]}, "ticker", "WAVES/EUR"]
    assert VENUE.session(None).parse(record(ticker), ticker) == ()
    own = [[{"TDLH43-DVQXD-2KHVYY": {"pair": "XBT/EUR", "price": "100000.0"}}], "ownTrades", {"sequence": 2}]
    assert VENUE.session(None).parse(record(own), own) == ()


def test_ws_trades_without_ids_repeated_message_is_duplicates() -> None:
    records = list(json_records(TRADES))
    i, rec = next(
        (i, r) for i, r in enumerate(records) if r.raw.count(b'"trade"') and r.raw.count(b"],[") >= 1
    )
    n = len(orjson.loads(rec.raw)[1])
    assert n >= 2
    a = audit([*records[: i + 1], rec, *records[i + 1 :]], VENUE)
    assert [f.line for f in findings(a, "duplicate")] == [rec.line] * n
    # One order filling two makers gives two identical rows in one message: two trades.
    msg = orjson.loads(rec.raw)
    msg[1] = [msg[1][0], msg[1][0]]
    twice = [record(msg, 1), record(msg, 2)]
    a = audit(twice, VENUE)
    assert len(a.events) == 4 and [f.line for f in findings(a, "duplicate")] == [2, 2]


def test_rest_trades_consecutive_ids() -> None:
    (rec,) = json_records(REST, read_json_doc)
    a = audit([rec], VENUE)
    trades = [e for e in a.events if isinstance(e, TradeMsg)]
    assert len(trades) == 1000
    assert [t.trade_id for t in trades] == list(range(10218208, 10219208))
    t = trades[0]
    assert (t.key, t.price, t.qty, t.side, t.exch_us, t.local_us) == (
        StreamKey("kraken", "XBTUSDT", "trades"),
        "105433.60000",
        "0.00027625",
        "buy",
        1762795433971744,
        None,
    )
    (r,) = a.results.values()
    assert r.messages == 1000 and not any(r.faults.values())
    # Removing one trade is one gap of one id.
    doc = orjson.loads(rec.raw)
    del doc["result"]["XBTUSDT"][500]
    a = audit([record(doc)], VENUE)
    (r,) = a.results.values()
    assert [(g.after, g.before, g.missing) for g in r.gaps] == [(10218707, 10218709, 1)]
    # Other REST answers are not trades.
    other = {"error": [], "result": {"XXBTZUSD": {"altname": "XBTUSD"}}}
    assert VENUE.session(None).parse(record(other), other) == ()


def _v2_levels(text: str) -> str:
    """JSON number levels, written with the text given (trailing zeros included)."""
    out = []
    for item in text.split(", "):
        price, qty = item.split("/")
        out.append(f'{{"price":{price},"qty":{qty}}}')
    return ",".join(out)


V2_BIDS = (
    "45283.5/0.10000000, 45283.4/1.54582015, 45282.1/0.10000000, 45281.0/0.10000000, 45280.3/1.54592586, "
    "45279.0/0.07990000, 45277.6/0.03310103, 45277.5/0.30000000, 45277.3/1.54602737, 45276.6/0.15445238"
)
V2_ASKS = (
    "45285.2/0.00100000, 45286.4/1.54571953, 45286.6/1.54571109, 45289.6/1.54560911, 45290.2/0.15890660, "
    "45291.8/1.54553491, 45294.7/0.04454749, 45296.1/0.35380000, 45297.5/0.09945542, 45299.5/0.18772827"
)


def test_v2_book_keeps_exact_number_text() -> None:
    result = {"channel": "book", "depth": 10, "snapshot": True, "symbol": "BTC/USD"}
    ack = {"method": "subscribe", "result": result, "success": True}
    snapshot = (
        '{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD",'
        f'"bids":[{_v2_levels(V2_BIDS)}],"asks":[{_v2_levels(V2_ASKS)}],"checksum":3310070434}}]}}'
    ).encode()
    # A new best bid pushes the 10th bid out of scope (no delete is sent): trimming keeps the CRC right.
    bids = [["45284.0", "0.50000000"], *[item.split("/") for item in V2_BIDS.split(", ")][:9]]
    asks = [item.split("/") for item in V2_ASKS.split(", ")]
    cs = checksums.kraken(bids, asks)
    update = (
        '{"channel":"book","type":"update","data":[{"symbol":"BTC/USD",'
        '"bids":[{"price":45284.0,"qty":0.50000000}],"asks":[],'
        f'"checksum":{cs},"timestamp":"2023-10-06T17:35:55.440295Z"}}]}}'
    ).encode()
    assert venue_for_message(orjson.loads(snapshot)) is VENUE
    recs = [record(ack, 1), record(snapshot, 2), record(update, 3)]
    a = audit(recs, VENUE)
    key = StreamKey("kraken", "BTC/USD", "book")
    snap = a.events[0]
    assert isinstance(snap, BookMsg) and snap.snapshot and snap.depth == 10
    assert snap.bids[0] == ["45283.5", "0.10000000"] and snap.bids[3] == ["45281.0", "0.10000000"]
    assert a.verified[key] == 2 and a.results[key].faults["checksum_mismatch"] == 0
    assert a.events[1].exch_us == 1696613755440295


def test_v2_trades_snapshot_overlap_is_not_repeated() -> None:
    def msg(kind: str, ids: list[int]) -> bytes:
        rows = ",".join(
            '{"symbol":"BTC/USD","side":"buy","price":42000.10,"qty":0.00100000,"ord_type":"market",'
            f'"trade_id":{i},"timestamp":"2023-09-25T07:49:37.708706Z"}}'
            for i in ids
        )
        return f'{{"channel":"trade","type":"{kind}","data":[{rows}]}}'.encode()

    recs = [record(msg("snapshot", [3, 1, 2]), 1), record(msg("update", [4]), 2),
            record(msg("snapshot", [2, 3, 4]), 3), record(msg("update", [5]), 4)]  # fmt: skip
    a = audit(recs, VENUE)
    trades = [e for e in a.events if isinstance(e, TradeMsg)]
    assert [t.trade_id for t in trades] == [1, 2, 3, 4, 5]
    assert trades[0].price == "42000.10" and trades[0].qty == "0.00100000" and trades[0].local_us is None
    (r,) = a.results.values()
    assert not any(r.faults.values())
