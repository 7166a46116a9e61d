"""Outputs of an audit: ``report.json``, hash-chained audit records, rebuilt-book CSVs.

Everything written here is a pure function of the inputs and options: no wall-clock
time, no host names, keys in a fixed order, so the same inputs give the same bytes.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import orjson

from shared.auditors import StreamResult
from shared.engine import AuditOutcome
from shared.metrics import METRICS_NAME, render
from shared.model import FAULT_KINDS, Fault
from shared.outdir import atomic_file, atomic_write
from shared.snapshots import BookRows, header

GENESIS = "0" * 64
REPORT_NAME = "report.json"
AUDIT_DIR = "audit"
RECORDS_NAME = "records.jsonl"
MANIFEST_NAME = "MANIFEST"
BOOKS_DIR = "books"

# Faults that cost integrity.  Reordering repaired inside the window costs nothing; a
# gap costs the messages it lost where the venue numbers them, else one.
_PENALISED = tuple(k for k in FAULT_KINDS if k not in (Fault.OUT_OF_ORDER.value, Fault.GAP.value))


def integrity_score(result: StreamResult) -> float:
    """100 x (1 - damaged / (messages + lost)), two decimals, in [0, 100].

    ``damaged`` counts every fault except repaired reordering and gaps; gaps count their
    missing messages (1 when the venue's ids cannot tell); repaired gaps count nothing.
    """
    lost = 0
    for gap in result.gaps:
        if not gap.repaired:
            lost += gap.missing if gap.missing is not None and gap.missing > 0 else 1
    damaged = sum(result.faults[k] for k in _PENALISED) + lost
    total = result.messages + lost
    if total <= 0:
        return 100.0
    score = 100.0 * max(0.0, 1.0 - damaged / total)
    return round(score, 2)


def stream_json(result: StreamResult) -> dict[str, Any]:
    key = result.key
    return {
        "exchange": key.exchange,
        "symbol": key.symbol,
        "channel": key.channel,
        "messages": result.messages,
        "faults": {k: result.faults.get(k, 0) for k in FAULT_KINDS},
        "gaps": [g.as_json() for g in result.gaps],
        "latency_ms": result.latency_ms,
        "integrity_score": integrity_score(result),
    }


def report_json(outcome: AuditOutcome) -> dict[str, Any]:
    return {
        "inputs": [i.as_json() for i in outcome.inputs],
        "malformed": sum(i.malformed for i in outcome.inputs),
        "streams": [stream_json(r) for r in outcome.streams],
    }


_INT64 = 2**63


def safe_json(obj: Any) -> Any:
    """``obj`` with every integer that JSON readers cannot hold exactly (beyond 64 bits) as text."""
    if type(obj) is int:
        return obj if -_INT64 <= obj < _INT64 else str(obj)
    if isinstance(obj, dict):
        return {k: safe_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [safe_json(v) for v in obj]
    return obj


def dumps(obj: Any) -> bytes:
    return orjson.dumps(safe_json(obj), option=orjson.OPT_SORT_KEYS)


def audit_records(outcome: AuditOutcome) -> Iterator[dict[str, Any]]:
    """The records, in a fixed order: inputs, malformed lines, then per stream its findings and summary."""
    for i in outcome.inputs:
        yield {"type": "input", **i.as_json()}
    for m in sorted(outcome.malformed, key=lambda m: (m.path, m.line)):
        yield {"type": "malformed", "path": m.path, "line": m.line, "reason": m.reason}
    for r in outcome.streams:
        stream = {"exchange": r.key.exchange, "symbol": r.key.symbol, "channel": r.key.channel}
        for f in sorted(r.findings, key=lambda f: (f.path, f.line, f.fault)):
            yield {
                "type": "finding",
                "stream": stream,
                "fault": f.fault,
                "path": f.path,
                "line": f.line,
                "local_us": f.local_us,
                "detail": f.detail,
            }
        summary = stream_json(r)
        summary["notes"] = dict(sorted(r.notes.items()))
        yield {"type": "summary", "stream": stream, "summary": summary}


def write_outputs(outcome: AuditOutcome, out_dir: str) -> dict[str, Any]:
    """Write report.json, the audit records, metrics and book CSVs; return the report."""
    os.makedirs(os.path.join(out_dir, AUDIT_DIR), exist_ok=True)
    report = safe_json(report_json(outcome))
    atomic_write(os.path.join(out_dir, REPORT_NAME), orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    prev = GENESIS
    count = 0
    records_path = os.path.join(out_dir, AUDIT_DIR, RECORDS_NAME)
    with atomic_file(records_path) as fh:
        for seq, record in enumerate(audit_records(outcome)):
            record["seq"] = seq
            record["prev"] = prev
            line = dumps(record)
            fh.write(line + b"\n")
            prev = hashlib.sha256(line).hexdigest()
            count += 1
    manifest = {
        "records": count,
        "final_hash": prev,
        "files": {RECORDS_NAME: _file_sha(records_path)},
        "inputs": {i.path: i.sha256 for i in outcome.inputs},
    }
    atomic_write(
        os.path.join(out_dir, AUDIT_DIR, MANIFEST_NAME),
        orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n",
    )
    atomic_write(os.path.join(out_dir, METRICS_NAME), render(report, outcome.dead_letters).encode())
    write_books(out_dir, outcome.books or BookRows())
    return report


def verify_records(out_dir: str) -> tuple[bool, str]:
    """Check the hash chain and the manifest of an output directory."""
    records_path = os.path.join(out_dir, AUDIT_DIR, RECORDS_NAME)
    with open(os.path.join(out_dir, AUDIT_DIR, MANIFEST_NAME), "rb") as fh:
        manifest = orjson.loads(fh.read())
    prev = GENESIS
    n = 0
    with open(records_path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            line = raw.rstrip(b"\n")
            record = orjson.loads(line)
            if record.get("prev") != prev:
                return False, f"record {n}: chain broken"
            prev = hashlib.sha256(line).hexdigest()
    if manifest.get("final_hash") != prev or manifest.get("records") != n:
        return False, "manifest does not match the records"
    return True, prev


def _file_sha(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


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
