"""A job cut into segments, audited apart in any order, merges into the same bytes.

This is what lets workers audit segments in parallel and an aggregator merge their
answers: the merged records must be byte-identical to one process reading everything.
"""

from __future__ import annotations

import random
from pathlib import Path

from shared.auditors import AuditConfig
from shared.engine import Engine, SegmentResult, audit_segment, combine, plan
from shared.report import write_outputs

DATA = Path(__file__).parent / "data"
# Every bundled capture, including segments of several files (streams fed by more than one
# recording) and a file that is not a capture (PROVENANCE.md).
INPUTS = [str(DATA)]


def _bytes(out: Path) -> dict[str, bytes]:
    return {rel: (out / rel).read_bytes() for rel in ("report.json", "audit/records.jsonl", "audit/MANIFEST")}


def test_segments_audited_apart_in_any_order_merge_to_the_same_bytes(tmp_path: Path) -> None:
    cfg = AuditConfig()
    whole = Engine(cfg).run(INPUTS)
    write_outputs(whole, str(tmp_path / "whole"))

    job = plan(INPUTS)
    assert len(job.segments) >= 20  # one per recording: parallel work
    assert any(len(segment) > 1 for segment in job.segments)
    results = [audit_segment(job, i, cfg) for i in range(len(job.segments))]
    # Answers travel as JSON and arrive in any order.
    received = [SegmentResult.decode(r.encode()) for r in results]
    random.Random(7).shuffle(received)
    write_outputs(combine(job, received), str(tmp_path / "parts"))
    assert _bytes(tmp_path / "parts") == _bytes(tmp_path / "whole")


def test_a_stream_fed_by_two_recordings_sums_their_audits() -> None:
    usdm = str(DATA / "hftbacktest" / "usdm" / "btcusdt_20240808.gz")
    csv = str(DATA / "nautilus" / "binance-futures_book_snapshot_25_BTCUSDT.csv")
    job = plan([usdm, csv])
    # Both feed the Binance USD-M BTCUSDT book: one segment, the 2020 snapshots read first.
    assert job.segments == [[[csv], [usdm]]]
    both = Engine(AuditConfig()).run([usdm, csv])
    alone = [Engine(AuditConfig()).run([p]) for p in (usdm, csv)]
    key = ("binance-futures", "BTCUSDT", "book")

    def book(outcome):  # type: ignore[no-untyped-def]
        return next(s for s in outcome.streams if tuple(s.key) == key)

    assert book(both).messages == book(alone[0]).messages + book(alone[1]).messages
    assert book(both).faults == {
        k: book(alone[0]).faults[k] + book(alone[1]).faults[k] for k in book(both).faults
    }
