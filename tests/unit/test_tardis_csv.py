"""Tardis CSV reader: real sample files plus small hand-written cases."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from shared.auditors import AuditConfig
from shared.engine import Engine
from shared.formats.detect import detect
from shared.formats.readers import READERS
from shared.formats.tardis_csv import read_tardis_csv
from shared.model import BookMsg, FundingMsg, RawRecord, StreamKey, TradeMsg

DATA = Path(__file__).resolve().parent.parent / "data" / "nautilus"

L2_HEAD = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount"
TICKER_HEAD = (
    "exchange,symbol,timestamp,local_timestamp,funding_timestamp,funding_rate,predicted_funding_rate,"
    "open_interest,last_price,index_price,mark_price"
)


def _read(path: Path | str) -> list[RawRecord]:
    return list(read_tardis_csv(str(path)))


def _lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def _write(tmp_path: Path, name: str, lines: list[str], gz: bool = False) -> Path:
    body = ("\n".join(lines) + "\n").encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(body) if gz else body)
    return path


def _rows(records: list[RawRecord]) -> list[object]:
    return [r.obj for r in records if r.kind == "row"]


# -- real files ------------------------------------------------------------------------


def test_registered_and_detected() -> None:
    assert READERS["tardis-csv"] is read_tardis_csv
    assert detect(str(DATA / "bitmex_trades_XBTUSD.csv")) == "tardis-csv"


def test_book_snapshot_25() -> None:
    path = DATA / "binance-futures_book_snapshot_25_BTCUSDT.csv"
    recs = _read(path)
    assert len(recs) == _lines(path) == 11
    assert recs[0].kind == "header"
    books = _rows(recs)
    assert len(books) == 10
    first = books[0]
    assert isinstance(first, BookMsg)
    assert first.snapshot and not first.bridge
    assert first.key == StreamKey("binance-futures", "BTCUSDT", "book")
    assert (first.exch_us, first.local_us, first.line) == (1598918403696000, 1598918403810979, 2)
    assert len(first.bids) == len(first.asks) == 25
    assert first.asks[0] == ["11657.08", "1.714"]
    assert first.bids[0] == ["11657.07", "10.896"]
    assert first.bids[11] == ["11654.7", "0.175"]  # text kept as written
    assert first.asks[17] == ["11659", "1.922"]


def test_book_snapshot_5() -> None:
    path = DATA / "binance-futures_book_snapshot_5_BTCUSDT.csv"
    recs = _read(path)
    assert len(recs) == _lines(path)
    books = _rows(recs)
    assert len(books) == 10
    assert all(isinstance(b, BookMsg) and b.snapshot and len(b.bids) == len(b.asks) == 5 for b in books)
    second = books[1]
    assert isinstance(second, BookMsg)
    assert second.asks[0] == ["11657.08", "1.476"]
    assert second.bids[4] == ["11655.68", "0.111"]


def test_trades_with_uuid_ids() -> None:
    path = DATA / "bitmex_trades_XBTUSD.csv"
    recs = _read(path)
    assert len(recs) == _lines(path)
    trades = _rows(recs)
    assert len(trades) == 10
    t = trades[0]
    assert isinstance(t, TradeMsg)
    assert t.key == StreamKey("bitmex", "XBTUSD", "trades")
    assert t.trade_id == "ccc3c1fa-212c-e8b0-1706-9b9c4f3d5ecf"
    assert (t.price, t.qty, t.side) == ("8531.5", "2152", "sell")
    assert (t.exch_us, t.local_us, t.line) == (1583020803145000, 1583020803307160, 2)


def test_incremental_l2_snapshot_rows_are_one_message() -> None:
    path = DATA / "deribit_incremental_book_L2_BTC-PERPETUAL.csv"
    recs = _read(path)
    assert len(recs) == _lines(path) == 16
    assert [r.kind for r in recs] == ["header", "row"] + ["grouped"] * 14
    msg = recs[1].obj
    assert isinstance(msg, BookMsg)
    assert msg.snapshot and msg.line == 2 and recs[1].line == 2
    assert msg.key == StreamKey("deribit", "BTC-PERPETUAL", "book")
    assert msg.local_us == 1585699200355684 and msg.exch_us == 1585699200245000
    assert len(msg.bids) + len(msg.asks) == 15
    assert msg.asks[0] == ["6421.5", "18640"] and msg.asks[1] == ["6422", "1190"]
    assert [r.line for r in recs] == list(range(1, 17))


def test_quotes_are_ignored_one_per_row() -> None:
    path = DATA / "huobi-dm-swap_quotes_BTC-USD.csv"
    recs = _read(path)
    assert len(recs) == _lines(path)
    assert [r.kind for r in recs] == ["header"] + ["ignored"] * 10
    assert recs[1].local_us == 1588291201234268


# -- hand-written cases ----------------------------------------------------------------


def _l2_rows() -> list[str]:
    return [
        L2_HEAD,
        "binance-futures,btcusdt,1000,1500,false,bid,99,1",  # before the first snapshot
        "binance-futures,btcusdt,2000,2500,true,bid,100.10,2",
        "binance-futures,btcusdt,2000,2500,true,ask,100.20,3",
        "binance-futures,btcusdt,2000,2500,true,bid,100.00,4",
        "binance-futures,btcusdt,3000,3500,false,bid,100.10,0",  # delete
        "binance-futures,btcusdt,3000,3500,false,ask,100.30,5",
        "binance-futures,btcusdt,4000,4500,false,ask,100.20,0",
    ]


def test_incremental_grouping_and_deletes(tmp_path: Path) -> None:
    path = _write(tmp_path, "l2.csv", _l2_rows())
    recs = _read(path)
    assert [(r.line, r.kind) for r in recs] == [
        (1, "header"),
        (2, "row"),
        (3, "row"),
        (4, "grouped"),
        (5, "grouped"),
        (6, "row"),
        (7, "grouped"),
        (8, "row"),
    ]
    msgs = _rows(recs)
    assert all(isinstance(m, BookMsg) for m in msgs)
    before, snap, delta, last = msgs
    assert isinstance(before, BookMsg) and isinstance(snap, BookMsg)
    assert isinstance(delta, BookMsg) and isinstance(last, BookMsg)
    assert not before.snapshot and before.bids == [["99", "1"]]
    assert snap.snapshot and snap.line == 3 and snap.local_us == 2500 and snap.exch_us == 2000
    assert snap.bids == [["100.10", "2"], ["100.00", "4"]] and snap.asks == [["100.20", "3"]]
    assert snap.key == StreamKey("binance-futures", "BTCUSDT", "book")
    assert not delta.snapshot and delta.line == 6
    assert delta.bids == [["100.10", "0"]] and delta.asks == [["100.30", "5"]]
    assert last.asks == [["100.20", "0"]] and last.line == 8
    # The grouped records carry their group's receive time.
    assert recs[3].local_us == recs[4].local_us == 2500


def test_snapshot_then_delta_with_same_local_time_are_two_messages(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "l2.csv",
        [
            L2_HEAD,
            "deribit,BTC-PERPETUAL,1,10,true,bid,5,1",
            "deribit,BTC-PERPETUAL,1,10,false,bid,5,2",
            "deribit,ETH-PERPETUAL,1,10,false,bid,5,2",
        ],
    )
    msgs = _rows(_read(path))
    assert [(m.snapshot, m.key.symbol) for m in msgs] == [  # type: ignore[attr-defined]
        (True, "BTC-PERPETUAL"),
        (False, "BTC-PERPETUAL"),
        (False, "ETH-PERPETUAL"),
    ]


@pytest.mark.parametrize(("exchange", "duplicates"), [("kraken", 1), ("coinbase", 1), ("deribit", 0)])
def test_repeated_update(tmp_path: Path, exchange: str, duplicates: int) -> None:
    # A venue without ids: an update received again (same levels, same exchange time) is a
    # duplicate, not applied twice; the same levels at another exchange time are not.  A venue
    # that numbers its messages: the dataset dropped the numbers, and the same rows at the same
    # millisecond can be another message (a level back to its value), so nothing can be told.
    rows = [
        L2_HEAD,
        f"{exchange},XBT-USD,1000,1001,true,bid,100.0,1",
        f"{exchange},XBT-USD,1000,1001,true,ask,101.0,1",
        f"{exchange},XBT-USD,2000,2001,false,bid,100.0,2",
        f"{exchange},XBT-USD,2000,2001,false,ask,101.0,3",
        f"{exchange},XBT-USD,2000,2009,false,bid,100.0,2",  # received again
        f"{exchange},XBT-USD,2000,2009,false,ask,101.0,3",
        f"{exchange},XBT-USD,3000,3001,false,bid,100.0,1",
        f"{exchange},XBT-USD,4000,4001,false,bid,100.0,2",  # same level and size, later: new
    ]
    path = _write(tmp_path, "l2.csv", rows)
    msgs = _rows(_read(path))
    assert [m.raw is not None for m in msgs] == [False] + [duplicates == 1] * 4  # type: ignore[attr-defined]
    (stream,) = Engine(AuditConfig()).run([str(path)]).streams
    assert stream.messages == 5 and stream.faults["duplicate"] == duplicates
    assert [f.line for f in stream.findings if f.fault == "duplicate"] == [6] * duplicates


def test_malformed_rows_do_not_stop_the_run(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "l2.csv",
        [
            L2_HEAD,
            "deribit,BTC-PERPETUAL,1,10,true,bid,5,1",
            "deribit,BTC-PERPETUAL,1,10,true,bid,4",  # wrong cell count
            "deribit,BTC-PERPETUAL,1,10,true,ask,6,1",
            "deribit,BTC-PERPETUAL,1,1.5e3,false,ask,6,2",  # bad local timestamp
            "deribit,BTC-PERPETUAL,x,20,false,ask,6,2",  # bad exchange timestamp
            "deribit,BTC-PERPETUAL,2,20,maybe,ask,6,2",  # bad flag
            "deribit,BTC-PERPETUAL,2,20,false,buy,6,2",  # bad side
            "",
            "deribit,BTC-PERPETUAL,2,20,false,ask,6,0",
        ],
    )
    recs = _read(path)
    assert len(recs) == 10
    assert sorted(r.line for r in recs) == list(range(1, 11))
    bad = {r.line: r.error for r in recs if r.kind == "malformed"}
    assert set(bad) == {3, 5, 6, 7, 8}
    assert "cells" in (bad[3] or "")
    assert "local_timestamp" in (bad[5] or "") and "timestamp" in (bad[6] or "")
    assert "is_snapshot" in (bad[7] or "") and "side" in (bad[8] or "")
    assert [r.kind for r in recs if r.line == 9] == ["blank"]
    snap, delta = _rows(recs)
    assert isinstance(snap, BookMsg) and isinstance(delta, BookMsg)
    # A malformed row inside a message does not split it.
    assert snap.bids == [["5", "1"]] and snap.asks == [["6", "1"]]
    assert delta.asks == [["6", "0"]] and delta.line == 10


def test_trades_integer_ids_and_malformed(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "binance_trades.csv",
        [
            "exchange,symbol,timestamp,local_timestamp,id,side,price,amount",
            "binance,btcusdt,1,2,12345,buy,100.5,0.010",
            "binance,btcusdt,3,4,,unknown,100.5,0.010",
            "binance,btcusdt,3,four,12346,sell,100.5,0.010",
        ],
    )
    recs = _read(path)
    a, b = _rows(recs)
    assert isinstance(a, TradeMsg) and isinstance(b, TradeMsg)
    assert a.trade_id == 12345 and a.side == "buy" and a.qty == "0.010"
    assert a.key == StreamKey("binance", "BTCUSDT", "trades")
    assert b.trade_id is None and b.side is None
    assert recs[3].kind == "malformed" and recs[3].line == 4


def test_liquidations_look_like_trades_but_are_ignored(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "binance-futures_liquidations_2020-09-01_BTCUSDT.csv",
        [
            "exchange,symbol,timestamp,local_timestamp,id,side,price,amount",
            "binance-futures,BTCUSDT,1,2,,buy,1,1",
        ],
    )
    assert [r.kind for r in _read(path)] == ["header", "ignored"]


def test_derivative_ticker(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "ticker.csv",
        [
            TICKER_HEAD,
            "binance-futures,BTCUSDT,1598918400000000,1598918400100000,1598947200000,0.00010000,0.0001,1,2,3,4",
            "binance-futures,BTCUSDT,1598918401000000,1598918401100000,,,,1,2,3,4",
            "binance-futures,BTCUSDT,1598918402000000,1598918402100000,soon,0.0001,,1,2,3,4",
        ],
    )
    recs = _read(path)
    a, b = _rows(recs)
    assert isinstance(a, FundingMsg) and isinstance(b, FundingMsg)
    assert a.key == StreamKey("binance-futures", "BTCUSDT", "funding")
    assert a.funding_time_us == 1598947200000 and a.rate == "0.00010000"
    assert a.exch_us == 1598918400000000 and a.local_us == 1598918400100000
    assert b.funding_time_us is None and b.rate is None
    assert recs[3].kind == "malformed" and "funding_timestamp" in (recs[3].error or "")


def test_gzip(tmp_path: Path) -> None:
    path = _write(tmp_path, "l2.csv.gz", _l2_rows(), gz=True)
    plain = _write(tmp_path, "l2.csv", _l2_rows())
    assert detect(str(path)) == "tardis-csv"
    got, want = _read(path), _read(plain)
    assert [(r.line, r.kind, r.local_us) for r in got] == [(r.line, r.kind, r.local_us) for r in want]
    assert [(m.bids, m.asks) for m in _rows(got)] == [(m.bids, m.asks) for m in _rows(want)]  # type: ignore[attr-defined]


def _cut_gzip(tmp_path: Path, name: str, rows: list[str]) -> Path:
    full = gzip.compress(("\n".join(rows) + "\n").encode())
    path = tmp_path / name
    path.write_bytes(full[: len(full) * 3 // 4])
    return path


def test_truncated_gzip(tmp_path: Path) -> None:
    # Large enough that the reader gets complete lines before the cut (it reads in 1 MiB chunks).
    count = 200_000
    rows = [L2_HEAD] + [
        f"deribit,BTC-PERPETUAL,{i},{i // 3 * 10},false,bid,{i * 7919 % 100003},1" for i in range(count)
    ]
    recs = _read(_cut_gzip(tmp_path, "cut.csv.gz", rows))
    assert recs[0].kind == "header"
    assert [r.line for r in recs] == list(range(1, len(recs) + 1))
    cut = recs[-1]
    assert cut.kind == "cut_off" and "cut off" in (cut.error or "")  # malformed, and the file is damaged
    # The last line read may be the head of a longer line: reported, not applied.
    assert recs[-2].kind == "malformed" and "may be incomplete" in (recs[-2].error or "")
    # The book message still held may be missing rows: reported, not applied.
    held = [r for r in recs if r.kind == "malformed" and "book message" in (r.error or "")]
    assert len(held) == 1 and held[0].line >= cut.line - 4
    assert sum(r.kind in ("malformed", "cut_off") for r in recs) == 3
    books = _rows(recs)
    assert 1 < len(books) < count // 3
    assert all(isinstance(b, BookMsg) and len(b.bids) == 3 for b in books)


def test_truncated_gzip_trades(tmp_path: Path) -> None:
    count = 200_000
    rows = ["exchange,symbol,timestamp,local_timestamp,id,side,price,amount"] + [
        f"binance,BTCUSDT,{i},{i + 5},{i},buy,{i * 7919 % 100003}.5,0.{i * 31 % 1000:03d}"
        for i in range(count)
    ]
    recs = _read(_cut_gzip(tmp_path, "cut.csv.gz", rows))
    assert [r.line for r in recs] == list(range(1, len(recs) + 1))
    assert [r.kind for r in recs[-2:]] == ["malformed", "cut_off"]
    trades = _rows(recs)
    assert len(trades) == len(recs) - 3
    for t in trades:  # every applied row is whole
        assert isinstance(t, TradeMsg)
        i = t.trade_id
        assert isinstance(i, int) and t.qty == f"0.{i * 31 % 1000:03d}" and t.local_us == i + 5


def test_header_only_and_row_before_header(tmp_path: Path) -> None:
    assert [r.kind for r in _read(_write(tmp_path, "h.csv", [L2_HEAD]))] == ["header"]
    recs = _read(_write(tmp_path, "x.csv", ["", "deribit,BTC-PERPETUAL,1,10,true,bid,5,1", L2_HEAD]))
    assert [r.kind for r in recs] == ["blank", "malformed", "header"]


def test_snapshot_with_empty_levels(tmp_path: Path) -> None:
    head = "exchange,symbol,timestamp,local_timestamp," + ",".join(
        f"asks[{i}].price,asks[{i}].amount,bids[{i}].price,bids[{i}].amount" for i in range(5)
    )
    path = _write(tmp_path, "s.csv", [head, "okex,BTC-USDT,1,2,10,1,9,1,11,2" + "," * 14])
    (msg,) = _rows(_read(path))
    assert isinstance(msg, BookMsg) and msg.snapshot
    assert msg.asks == [["10", "1"], ["11", "2"]] and msg.bids == [["9", "1"]]
    assert msg.key == StreamKey("okex", "BTC-USDT", "book")


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.csv")))
def test_every_line_is_one_record(name: str) -> None:
    path = DATA / name
    recs = _read(path)
    assert [r.line for r in recs] == list(range(1, _lines(path) + 1))
