"""Several inputs feeding one stream: rotated files continue, other recordings do not mix."""

from __future__ import annotations

import gzip
from pathlib import Path

from shared.auditors import AuditConfig
from shared.engine import Engine, rebuild_book

DATA = Path(__file__).parent / "data"
USDM = DATA / "hftbacktest" / "usdm" / "btcusdt_20240808.gz"
CSV_SNAPSHOTS = DATA / "nautilus" / "binance-futures_book_snapshot_25_BTCUSDT.csv"  # 2020, same stream key
KEY = ("binance-futures", "BTCUSDT", "book")


def _book(outcome):  # type: ignore[no-untyped-def]
    return next(s for s in outcome.streams if tuple(s.key) == KEY)


def _split(tmp_path: Path, names: tuple[str, str], lost: int = 0) -> None:
    """The capture cut in two files; ``lost`` lines after the cut are in neither (the second
    file is then another recording, started later, whatever the files are called)."""
    with gzip.open(USDM, "rb") as fh:
        lines = fh.read().split(b"\n")[:-1]
    half = len(lines) // 2
    for name, part in zip(names, (lines[:half], lines[half + lost :]), strict=True):
        with gzip.open(tmp_path / name, "wb") as fh:
            fh.write(b"\n".join(part) + b"\n")


def test_a_rotated_capture_continues_across_files(tmp_path: Path) -> None:
    _split(tmp_path, ("btcusdt_20240808.gz", "btcusdt_20240809.gz"))  # one recording, rotated daily
    split = Engine(AuditConfig()).run([str(tmp_path)])
    whole = Engine(AuditConfig()).run([str(USDM)])
    assert _book(split).faults == _book(whole).faults
    assert "new_recording" not in _book(split).notes
    at = 1723161540_000_000  # 23:59:00, in the second file
    a = rebuild_book([str(tmp_path)], *KEY[:2], at)
    b = rebuild_book([str(USDM)], *KEY[:2], at)
    assert (a["bids"], a["asks"], a["safe"]) == (b["bids"], b["asks"], True)


def test_files_of_different_recordings_are_audited_apart(tmp_path: Path) -> None:
    _split(tmp_path, ("btcusdt_20240808.gz", "btcusdt_20240809.gz"), lost=3000)
    book = _book(Engine(AuditConfig()).run([str(tmp_path)]))
    assert book.faults["gap"] == 0 and book.notes["before_snapshot"] > 1000  # the second waits for a snapshot
    at = 1723161540_000_000  # 23:59:00, inside the second file, which never had a snapshot
    assert rebuild_book([str(tmp_path)], *KEY[:2], at)["safe"] is False


def test_another_recording_after_a_capture_is_not_compared_with_it() -> None:
    outcome = Engine(AuditConfig()).run([str(USDM), str(CSV_SNAPSHOTS)])
    book = _book(outcome)
    assert book.faults["snapshot_mismatch"] == 0 and book.faults["timestamp_drift"] == 0


def test_diffs_of_another_recording_wait_for_their_own_snapshot() -> None:
    outcome = Engine(AuditConfig()).run([str(CSV_SNAPSHOTS), str(USDM)])
    book = _book(outcome)
    for kind in ("crossed_book", "gap", "snapshot_mismatch", "timestamp_drift"):
        assert book.faults[kind] == 0, kind
    alone = _book(Engine(AuditConfig()).run([str(USDM)]))
    assert book.messages == alone.messages + 10  # the ten CSV snapshots
