"""FTX venue: four real captures (FTX, FTX US, FTX TR) verify every checksum; trades; routing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from venue_harness import DATA, audit, faults, findings, first_update_at_top, json_records, rewrite

from shared.exchanges import rules_for, venue_for_file, venue_for_message, venue_for_url
from shared.exchanges.ftx import VENUE
from shared.formats.readers import read_json_doc, read_jsonl
from shared.model import BookMsg, RawRecord, StreamKey, TradeMsg
from shared.numbers import as_text
from shared.sequencing import INCREASING, NONE

CAPTURES = {
    # path: (exchange id, book messages, all carrying a checksum)
    DATA / "cryptofeed_ftx" / "FTX.ws.1.0": ("ftx", 971),
    DATA / "cryptofeed_ftx" / "FTX_US.ws.34.0": ("ftx-us", 415),
    DATA / "cryptofeed_ftx" / "FTX_TR.ws.1.0": ("ftx-tr", 2811),
    DATA / "cryptofeed_ftx_2021-04" / "FTX.ws.32.0": ("ftx", 1276),
}


def test_routing_and_rules() -> None:
    for url in ("wss://ftexchange.com/ws/", "wss://ftx.com/ws/", "wss://ftx.us/ws/", "wss://ftxtr.com/ws/"):
        assert venue_for_url(url) is VENUE
    for name in ("FTX.ws.1.0", "FTX_US.ws.34.0", "FTX_TR.ws.1.0"):
        assert venue_for_file(name) is VENUE
    for exchange in ("ftx", "ftx-us", "ftx-tr"):
        rules = rules_for(exchange)
        assert rules.book_rule is NONE and rules.trade_rule is INCREASING and rules.checksum is not None
    (rec,) = json_records(DATA / "nautilus_ftx" / "ws_trades.json", read_json_doc)
    assert venue_for_message(orjson.loads(rec.raw)) is VENUE


@pytest.mark.parametrize("path", sorted(CAPTURES), ids=lambda p: p.name)
def test_capture_every_checksum_verifies(path: Path) -> None:
    exchange, count = CAPTURES[path]
    a = audit(json_records(path), VENUE)
    assert not a.malformed
    books = [e for e in a.events if isinstance(e, BookMsg)]
    assert len(books) == count and all(e.checksum is not None for e in books)
    assert {e.key.exchange for e in a.events} == {exchange}
    assert sum(1 for e in books if e.snapshot) == 10
    # Every checksum carried (partials included) was compared.
    assert sum(a.verified.values()) == count
    assert faults(a, "checksum_mismatch") == 0
    assert faults(a, "gap") == 0
    for kind in ("duplicate", "out_of_order", "crossed_book", "invalid_value", "snapshot_mismatch"):
        assert faults(a, kind) == 0, kind
    assert all(isinstance(e.exch_us, int) for e in books)


def test_trades() -> None:
    a = audit(json_records(DATA / "cryptofeed_ftx" / "FTX_TR.ws.1.0"), VENUE)
    trades = [e for e in a.events if isinstance(e, TradeMsg)]
    assert len(trades) == 165 and all(isinstance(t.trade_id, int) for t in trades)
    t = trades[0]
    assert (t.key, t.trade_id, t.price, t.qty, t.side, t.exch_us) == (
        StreamKey("ftx-tr", "ETH/USD", "trades"),
        3851103424,
        "2861.6",
        "0.007",
        "buy",
        1651237298252748,
    )
    trade_results = [r for k, r in a.results.items() if k.channel == "trades"]
    assert sum(r.messages for r in trade_results) == 165
    assert all(not any(r.faults[k] for k in ("gap", "duplicate", "out_of_order")) for r in trade_results)
    (rec,) = json_records(DATA / "nautilus_ftx" / "ws_trades.json", read_json_doc)
    events = VENUE.session(None).parse(rec, orjson.loads(rec.raw))
    assert [e.trade_id for e in events if isinstance(e, TradeMsg)] == [2958655478, 2958655479, 2958655480]


def test_corrupting_one_quantity_gives_exactly_one_mismatch() -> None:
    path = DATA / "cryptofeed_ftx" / "FTX.ws.1.0"
    records = list(json_records(path))
    target = first_update_at_top(records, VENUE, "bids", lambda lv: lv[1] != 0)
    assert target is not None

    def corrupt(obj: Any) -> None:
        level = next(lv for lv in obj["data"]["bids"] if lv[1] != 0)
        level[1] = level[1] * 2

    rewrite(records, target, corrupt)
    a = audit(records, VENUE)
    found = findings(a, "checksum_mismatch")
    assert len(found) == 1 and found[0].line == target


def test_float_levels_are_kept_and_printed_as_sent() -> None:
    (rec,) = json_records(DATA / "nautilus_ftx" / "ws_orderbook_partial.json", read_jsonl)
    a = audit([rec], VENUE)
    (e,) = a.events
    assert isinstance(e, BookMsg) and e.snapshot and e.key == StreamKey("ftx", "ETH-PERP", "book")
    assert e.bids[0] == [3761.9, 60.526] and as_text(e.bids[0][0]) == "3761.9"
    assert e.exch_us == 1641070804529784  # 1641070804.5297835 s, rounded half-even
    assert sum(a.verified.values()) == 1 and faults(a, "checksum_mismatch") == 0


def test_session_messages_without_market_data() -> None:
    s = VENUE.session("wss://ftx.us/ws/")
    rec = RawRecord("t", 1, 1, "json", b"{}", url="wss://ftx.us/ws/")
    for msg in (
        {"type": "subscribed", "channel": "orderbook", "market": "BTC/USD"},
        {"type": "info", "code": 20001, "msg": "Server restarting"},
        {"type": "pong"},
        {"channel": "ticker", "market": "BTC/USD", "type": "update", "data": {"bid": 1.0}},
    ):
        assert s.parse(rec, msg) == ()
    with pytest.raises((KeyError, TypeError, ValueError)):
        s.parse(rec, {"channel": "orderbook", "market": "BTC/USD", "type": "update", "data": []})
    data = {"time": 1.5, "checksum": 1, "bids": [], "asks": [], "action": "update"}
    (e,) = s.parse(rec, {"channel": "orderbook", "market": "BTC/USD", "type": "update", "data": data})
    assert isinstance(e, BookMsg) and e.key.exchange == "ftx-us" and e.exch_us == 1_500_000
