"""Segments are decided by what the captures hold, not by what their files are called.

Files that feed a common stream are one segment, read in the order they were recorded (their
first receive time); files that share no stream are separate segments, audited in parallel.
The captures are the real Binance USD-M recording of tests/data, cut or relabelled.
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

from shared.auditors import AuditConfig, StreamResult
from shared.engine import (
    AuditOutcome,
    Engine,
    HeadLimit,
    SegmentResult,
    audit_segment,
    combine,
    plan,
    probe_group,
    rebuild_book,
)
from shared.model import StreamKey
from shared.planning import GroupHead, segments_of
from shared.report import write_outputs

DATA = Path(__file__).parent / "data"
USDM = DATA / "hftbacktest" / "usdm" / "btcusdt_20240808.gz"
BOOK = StreamKey("binance-futures", "BTCUSDT", "book")
TRADES = StreamKey("binance-futures", "BTCUSDT", "trades")


@pytest.fixture(scope="module")
def usdm_lines() -> list[bytes]:
    with gzip.open(USDM, "rb") as fh:
        return fh.read().split(b"\n")[:-1]


def _write(path: Path, lines: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _stream(outcome: AuditOutcome, key: StreamKey) -> StreamResult:
    return next(s for s in outcome.streams if s.key == key)


def _audit(*paths: Path, cfg: AuditConfig | None = None) -> AuditOutcome:
    return Engine(cfg or AuditConfig()).run([str(p) for p in paths])


def _bytes(out: Path) -> dict[str, bytes]:
    return {rel: (out / rel).read_bytes() for rel in ("report.json", "audit/records.jsonl", "audit/MANIFEST")}


def _parts_equal_whole(paths: list[str], tmp_path: Path) -> None:
    """Auditing the plan's segments apart, in any order, gives the bytes of one process."""
    cfg = AuditConfig()
    write_outputs(Engine(cfg).run(paths), str(tmp_path / "whole"))
    job = plan(paths)
    results = [audit_segment(job, i, cfg) for i in range(len(job.segments))]
    received = [SegmentResult.decode(r.encode()) for r in results]
    random.Random(3).shuffle(received)
    write_outputs(combine(job, received), str(tmp_path / "parts"))
    assert _bytes(tmp_path / "parts") == _bytes(tmp_path / "whole")


# -- files named alike are not one unit of work ----------------------------------------------

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")


def _relabelled(lines: list[bytes], symbol: str) -> list[bytes]:
    """The capture as if recorded for ``symbol``: stream names and the ``s`` field rewritten."""
    low = symbol.lower().encode()
    return [
        line.replace(b'"btcusdt@', b'"' + low + b"@").replace(
            b'"s":"BTCUSDT"', b'"s":"' + symbol.encode() + b'"'
        )
        for line in lines
    ]


def test_files_named_alike_holding_different_symbols_are_separate_segments(
    tmp_path: Path, usdm_lines: list[bytes]
) -> None:
    head = usdm_lines[:6000]  # the REST snapshot, and diffs and trades either side of it
    files = [
        _write(tmp_path / "in" / f"synthetic_usdm_250k_{n}.txt", _relabelled(head, symbol))
        for n, symbol in enumerate(SYMBOLS)
    ]
    job = plan([str(tmp_path / "in")])
    assert job.segments == [[[str(f)]] for f in files]  # one per symbol, in file order
    outcome = _audit(tmp_path / "in")
    books = {s.key.symbol: s for s in outcome.streams if s.key.channel == "book"}
    assert sorted(books) == sorted(SYMBOLS)
    alone = _stream(_audit(files[0]), BOOK)
    for book in books.values():
        assert (book.messages, book.faults, book.notes) == (alone.messages, alone.faults, alone.notes)
    _parts_equal_whole([str(tmp_path / "in")], tmp_path / "out")


# -- a recording split into files named anyhow is one segment, read in time order ---------------


def test_a_recording_split_into_unrelated_names_is_read_in_time_order_and_continues(
    tmp_path: Path, usdm_lines: list[bytes]
) -> None:
    cut = len(usdm_lines) // 2
    # Named so that name order is the reverse of time order, with nothing in common.
    first = _write(tmp_path / "in" / "zz_night_shift.log", usdm_lines[:cut])
    second = _write(tmp_path / "in" / "capture-a.txt", usdm_lines[cut:])
    job = plan([str(tmp_path / "in")])
    assert job.segments == [[[str(first)], [str(second)]]]

    split, whole = _audit(tmp_path / "in"), _audit(USDM)
    for key in (BOOK, TRADES):
        a, b = _stream(split, key), _stream(whole, key)
        assert a.messages == b.messages
        assert a.faults == b.faults
        assert a.gaps == b.gaps == []  # no gap at the cut
        assert [(f.fault, f.local_us) for f in a.findings] == [(f.fault, f.local_us) for f in b.findings]
        assert a.latency_ms == b.latency_ms
        assert "new_recording" not in a.notes
    assert sum(i.lines for i in split.inputs) == sum(i.lines for i in whole.inputs)
    # The book inside the second file is the one the unsplit capture rebuilds: continuity
    # across the files was checked, not assumed.
    at = 1723161600_000_000 - 60_000_000
    got = rebuild_book([str(tmp_path / "in")], "binance-futures", "BTCUSDT", at)
    want = rebuild_book([str(USDM)], "binance-futures", "BTCUSDT", at)
    assert (got["bids"], got["asks"], got["safe"]) == (want["bids"], want["asks"], True)
    _parts_equal_whole([str(tmp_path / "in")], tmp_path / "out")


# -- other recordings of one stream: one segment, each audited as on its own ---------------------


def test_two_copies_of_a_recording_in_two_directories_are_each_audited_as_alone(
    tmp_path: Path, usdm_lines: list[bytes]
) -> None:
    """A backup copy beside the original: the same stream twice, overlapping in time.  Neither
    copy's ids may be taken for the other's duplicates, gaps or continuation."""
    lines = usdm_lines[:20000]
    a = _write(tmp_path / "primary" / "btcusdt.txt", lines)
    b = _write(tmp_path / "backup" / "2024" / "copy.txt", lines)
    job = plan([str(tmp_path / "primary"), str(tmp_path / "backup")])
    assert job.segments == [[[str(b)], [str(a)]]]  # same start: by path
    cfg = AuditConfig(book_interval_us=10_000_000)
    both, alone = _audit(a, b, cfg=cfg), _audit(a, cfg=cfg)
    for key in (BOOK, TRADES):
        two, one = _stream(both, key), _stream(alone, key)
        assert one.messages > 1000
        assert two.messages == 2 * one.messages
        assert two.faults == {k: 2 * n for k, n in one.faults.items()}
        assert two.notes.pop("new_recording") == 1
        assert two.notes == {k: 2 * n for k, n in one.notes.items()}
    assert both.books is not None and alone.books is not None
    assert both.books.rows[BOOK] == alone.books.rows[BOOK] * 2  # each copy's rebuilt books
    _parts_equal_whole([str(tmp_path / "primary"), str(tmp_path / "backup")], tmp_path / "out")


def test_a_later_recording_of_a_stream_is_not_a_gap(tmp_path: Path, usdm_lines: list[bytes]) -> None:
    """The second file starts well after the first ends: another recording.  Its trades are
    not a gap after the first file's, its diffs wait for a snapshot of their own."""
    cut = len(usdm_lines) // 2
    first = _write(tmp_path / "a" / "part.txt", usdm_lines[:cut])
    later = _write(tmp_path / "b" / "part.txt", usdm_lines[cut + 3000 :])
    outcome = _audit(tmp_path)
    assert len(plan([str(tmp_path)]).segments) == 1
    book, trades = _stream(outcome, BOOK), _stream(outcome, TRADES)
    assert book.faults["gap"] == trades.faults["gap"] == 0
    assert book.notes["new_recording"] == trades.notes["new_recording"] == 1
    assert book.notes["before_snapshot"] > 1000  # the later recording never had a snapshot
    alone = [_stream(_audit(p), TRADES) for p in (first, later)]
    assert trades.faults == {k: alone[0].faults[k] + alone[1].faults[k] for k in trades.faults}


# -- the bundled data --------------------------------------------------------------------------


def test_the_bundled_data_is_cut_where_streams_are_shared() -> None:
    job = plan([str(DATA)])
    shared = [[Path(g[0]).name for g in segment] for segment in job.segments if len(segment) > 1]
    assert shared == [
        # The BitMEX XBTUSD trades of a Tardis CSV (2020) and of a cryptofeed capture (2021).
        ["bitmex_trades_XBTUSD.csv", "BITMEX.ws.1.0"],
        # Binance USD-M BTCUSDT book: two Tardis snapshot datasets (2020), then hftbacktest (2024).
        [
            "binance-futures_book_snapshot_25_BTCUSDT.csv",
            "binance-futures_book_snapshot_5_BTCUSDT.csv",
            "btcusdt_20240808.gz",
        ],
    ]
    groups = sum(len(segment) for segment in job.segments)
    assert (groups, len(job.segments)) == (28, 25)
    assert plan([str(DATA)]).segments == job.segments  # the same inputs, the same plan
    outcome = _audit(DATA)
    assert all(i.audited for i in outcome.inputs) and len(outcome.streams) > 200


# -- the pieces ----------------------------------------------------------------------------------


def _head(*keys: str, first_us: int | None = 1) -> GroupHead:
    return GroupHead(frozenset(StreamKey("x", k, "book") for k in keys), first_us)


def test_groups_sharing_a_stream_through_others_are_one_segment_in_time_order() -> None:
    groups = [["g0"], ["g1"], ["g2"], ["g3"], ["g4"], ["g5"]]
    heads = [
        _head("A", first_us=30),
        _head("B"),  # feeds nothing the others feed
        _head("C", first_us=None),
        _head("A", "C", first_us=20),  # links g0 and g2
        _head(),  # no stream at all
        _head("C", first_us=10),
    ]
    assert segments_of(groups, heads) == [
        [["g5"], ["g3"], ["g0"], ["g2"]],  # by first receive time; no time last
        [["g1"]],
        [["g4"]],
    ]


def test_the_probe_reads_the_head_only(tmp_path: Path, usdm_lines: list[bytes]) -> None:
    path = _write(tmp_path / "x.txt", usdm_lines[:100])
    formats = {str(path): "epoch"}
    first = int(usdm_lines[0].split(b" ", 1)[0]) // 1000
    assert probe_group([str(path)], formats) == GroupHead(frozenset({BOOK, TRADES}), first)
    # The first two lines are a depth diff and a book ticker: the trades after them are not seen.
    assert probe_group([str(path)], formats, HeadLimit(records=2)).keys == {BOOK}
    assert probe_group([str(path)], formats, HeadLimit(text_bytes=1)).keys == {BOOK}
