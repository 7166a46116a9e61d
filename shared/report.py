"""Outputs of an audit: ``report.json``, hash-chained audit records, rebuilt-book CSVs.

Everything written here is a pure function of the inputs and options: no wall-clock
time, no host names, keys in a fixed order, so the same inputs give the same bytes.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Mapping
from typing import Any

from shared import manifest
from shared.auditors import StreamResult
from shared.engine import AuditOutcome
from shared.formats.timestamps import us_to_iso
from shared.html_report import write_html
from shared.jsonout import Items, write_json
from shared.manifest import AUDIT_DIR as AUDIT_DIR
from shared.manifest import GENESIS as GENESIS
from shared.manifest import MANIFEST_NAME as MANIFEST_NAME
from shared.manifest import RECORDS_NAME as RECORDS_NAME
from shared.metrics import METRICS_NAME, render
from shared.model import FAULT_KINDS, Channel, Fault, Gap, Unsafe
from shared.outdir import atomic_file, atomic_write
from shared.records import write_chain
from shared.signing import signing_key
from shared.snapshots import BookRows, header
from shared.verify import verify

REPORT_NAME = "report.json"
BOOKS_DIR = "books"

# Faults that cost integrity.  Reordering repaired inside the window costs nothing; a
# gap costs the messages it lost where the venue numbers them, else one.
_PENALISED = tuple(k for k in FAULT_KINDS if k not in (Fault.OUT_OF_ORDER.value, Fault.GAP.value))


def integrity_score(result: StreamResult) -> float:
    """100 x (1 - damaged / (messages + lost)), two decimals, in [0, 100].

    ``damaged`` counts every fault except repaired reordering and gaps, and every line of the
    stream's inputs that could not be read; gaps count their missing messages (1 when the
    venue's ids cannot tell), a cut-off input one more; repaired gaps count nothing.  A stream
    with damage never scores 100: the score is then at most 99.99.
    """
    lost = 1 if result.cut_off else 0
    for gap in result.gaps:
        if not gap.repaired:
            lost += gap.missing if gap.missing is not None and gap.missing > 0 else 1
    damaged = sum(result.faults[k] for k in _PENALISED) + lost + result.damaged_lines
    total = result.messages + lost + result.damaged_lines
    if total <= 0:
        return 100.0
    score = round(100.0 * max(0.0, 1.0 - damaged / total), 2)
    return min(score, 99.99) if damaged else score


def iso(us: int | None) -> str | None:
    """Epoch microseconds as ISO-8601 UTC, or None (no time, or none a calendar can show)."""
    if us is None:
        return None
    try:
        return us_to_iso(us)
    except (OverflowError, ValueError, OSError):
        return None


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole > 0 else None


def unsafe_row(u: Unsafe) -> dict[str, Any]:
    """An unsafe interval as the contract shows it."""
    return {
        "from": iso(u.from_us),
        "to": iso(u.to_us),
        "from_us": u.from_us,
        "to_us": u.to_us,
        "cause": u.cause,
        "messages": u.messages,
    }


def gap_row(g: Gap) -> dict[str, Any]:
    return {**g.as_json(), "time": iso(g.local_us)}


def unsafe_seconds(result: StreamResult) -> tuple[float | None, dict[str, float]]:
    """The stream's unsafe time in seconds, in all and by cause.  An interval open at the end
    lasts until the last message of its part of the stream; a stream without receive times
    has no total (None)."""
    total_us = 0
    by_cause: dict[str, int] = {}
    timed = True
    for u in result.unsafe:
        end = u.to_us if u.to_us is not None else (u.ends_us if u.ends_us is not None else result.last_us)
        if u.from_us is None or end is None:
            timed = False
            continue
        span = max(0, end - u.from_us)
        total_us += span
        by_cause[u.cause] = by_cause.get(u.cause, 0) + span
    seconds = {cause: round(us / 1e6, 6) for cause, us in sorted(by_cause.items())}
    return (round(total_us / 1e6, 6) if timed else None), seconds


def rates_json(result: StreamResult, unsafe_seconds: float | None) -> dict[str, float | None]:
    """The fault rates in the units data teams quote: fractions, None where unknowable."""
    key = result.key
    faults = result.faults
    missing_trades = None
    if key.channel == Channel.TRADES.value and result.ids_consecutive:
        counts = [g.missing for g in result.gaps if not g.repaired]
        if all(c is not None for c in counts):
            missing = sum(c for c in counts if c is not None)
            expected = result.messages - faults[Fault.DUPLICATE.value] + missing
            missing_trades = _share(missing, expected)
    book_unsafe = None
    timed = result.first_us is not None and result.last_us is not None and unsafe_seconds is not None
    if key.channel == Channel.BOOK.value and timed:
        assert result.first_us is not None and result.last_us is not None and unsafe_seconds is not None
        book_unsafe = _share(unsafe_seconds * 1e6, result.last_us - result.first_us)
        if book_unsafe is None and not result.unsafe:
            book_unsafe = 0.0  # one instant, trusted
    funding = None
    if key.channel == Channel.FUNDING.value:
        funding = _share(min(result.settlements_faulty, result.settlements), result.settlements)
    return {
        "missing_trades": missing_trades,
        "duplicate_messages": _share(faults[Fault.DUPLICATE.value], result.messages),
        "drift_over_100ms": _share(result.drift_over_100ms, result.drift_compared),
        "book_unsafe_time": book_unsafe,
        "funding_discontinuities": funding,
    }


def stream_json(result: StreamResult) -> dict[str, Any]:
    key = result.key
    seconds, by_cause = unsafe_seconds(result)
    gaps, unsafe = result.gaps, result.unsafe
    return {
        "exchange": key.exchange,
        "symbol": key.symbol,
        "channel": key.channel,
        "messages": result.messages,
        "faults": {k: result.faults.get(k, 0) for k in FAULT_KINDS},
        # Made item by item as they are written: a stream may have a million gaps.
        "gaps": Items(lambda: map(gap_row, gaps), len(gaps)),
        # Gaps a replay source filled, and the messages it supplied (not counted in messages).
        "gaps_repaired": sum(1 for g in gaps if g.repaired),
        "replayed_messages": result.replayed,
        "latency_ms": result.latency_ms,
        "unsafe": Items(lambda: map(unsafe_row, unsafe), len(unsafe)),
        "unsafe_seconds": seconds,
        "unsafe_by_cause": by_cause,
        "rates": rates_json(result, seconds),
        "integrity_score": integrity_score(result),
        "input_damage": {"malformed_lines": result.damaged_lines, "cut_off": result.cut_off},
        "first_time": iso(result.first_us),
        "last_time": iso(result.last_us),
        "first_us": result.first_us,
        "last_us": result.last_us,
    }


def report_json(outcome: AuditOutcome) -> dict[str, Any]:
    return {
        "inputs": [i.as_json() for i in outcome.inputs],
        "malformed": sum(i.malformed for i in outcome.inputs),
        "streams": [stream_json(r) for r in outcome.streams],
    }


def audit_records(outcome: AuditOutcome) -> Iterator[dict[str, Any]]:
    """The records, in a fixed order: inputs, malformed lines, then per stream its findings and summary."""
    for i in outcome.inputs:
        yield {"type": "input", **i.as_json()}
    for m in outcome.malformed.sorted(key=lambda m: (m.path, m.line)):
        yield {"type": "malformed", "path": m.path, "line": m.line, "reason": m.reason}
    for r in outcome.streams:
        stream = {"exchange": r.key.exchange, "symbol": r.key.symbol, "channel": r.key.channel}
        for f in r.findings.sorted(key=lambda f: (f.path, f.line, f.fault)):
            yield {
                "type": "finding",
                "stream": stream,
                "fault": f.fault,
                "path": f.path,
                "line": f.line,
                "local_us": f.local_us,
                "time": iso(f.local_us),
                "detail": f.detail,
            }
        summary = stream_json(r)
        summary["notes"] = dict(sorted(r.notes.items()))
        yield {"type": "summary", "stream": stream, "summary": summary}


def write_outputs(
    outcome: AuditOutcome, out_dir: str, input_sizes: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """Write report.json, the audit records, metrics, book CSVs and report.html, then the MANIFEST over all
    of them (signed with ``RETAPE_SIGNING_KEY`` when it is set); return the report.
    ``input_sizes``: the inputs' sizes when they were hashed (else they are read from disk)."""
    key = signing_key()  # before anything is written: an unreadable key is a usage error
    os.makedirs(os.path.join(out_dir, AUDIT_DIR), exist_ok=True)
    # Gaps and unsafe intervals stay in their spools until written (see shared.jsonout).
    report = report_json(outcome)
    with atomic_file(os.path.join(out_dir, REPORT_NAME)) as fh:
        write_json(fh.write, report, indent=True)
        fh.write(b"\n")
    records_path = os.path.join(out_dir, AUDIT_DIR, RECORDS_NAME)
    count, prev = write_chain(records_path, audit_records(outcome))
    metrics_path = os.path.join(out_dir, METRICS_NAME)
    atomic_write(metrics_path, render(report, outcome.dead_letters, outcome.replay).encode())
    books = write_books(out_dir, outcome.books or BookRows())
    html = write_html(report, outcome.streams, out_dir)
    # Last: the MANIFEST covers every file written above, and only them: the same inputs and
    # options give the same MANIFEST whatever else the directory held.
    written = [os.path.join(out_dir, REPORT_NAME), records_path, metrics_path, *books, html]
    listing = manifest.build(
        out_dir, written, outcome.inputs, count, prev, outcome.settings, key, input_sizes
    )
    manifest.write(out_dir, listing, key)
    return report


def verify_records(out_dir: str) -> tuple[bool, str]:
    """Check the hash chain, the MANIFEST and every output file of an output directory:
    (True, the final hash) or (False, the first broken thing)."""
    verdict = verify(out_dir)
    return verdict.ok, verdict.final_hash if verdict.final_hash is not None else verdict.message


def write_books(out_dir: str, books: BookRows) -> list[str]:
    """One ``book_snapshot_<depth>`` CSV per stream; CSVs of an earlier run are replaced."""
    folder = os.path.join(out_dir, BOOKS_DIR)
    if os.path.isdir(folder):
        for stale in sorted(os.listdir(folder)):
            if stale.endswith(".csv"):
                os.remove(os.path.join(folder, stale))
    written = []
    for key in sorted(books.rows):
        os.makedirs(folder, exist_ok=True)
        name = f"{key.exchange}_book_snapshot_{books.depth}_{_safe(key.symbol)}.csv"
        path = os.path.join(folder, name)
        with atomic_file(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(header(books.depth))
            writer.writerows(books.rows[key])
        written.append(path)
    return written


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
