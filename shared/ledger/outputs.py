"""What ``retape ledger`` writes: ``ledger.jsonl`` and ``ledger.csv`` (one transaction per line,
sorted by account, time, id), ``balances.json``, ``unresolved.jsonl``, ``report.json``, and the
audit records with their MANIFEST, as ``retape audit`` writes them (``retape verify`` checks
both)."""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from shared import manifest
from shared.ledger.merge import FIELDS
from shared.ledger.reconstruct import LedgerResult
from shared.ledger.values import iso_utc
from shared.manifest import AUDIT_DIR, RECORDS_NAME
from shared.outdir import atomic_write
from shared.planning import InputSummary
from shared.records import write_chain
from shared.signing import signing_key

LEDGER_JSONL = "ledger.jsonl"
LEDGER_CSV = "ledger.csv"
BALANCES = "balances.json"
UNRESOLVED = "unresolved.jsonl"
REPORT = "report.json"
CSV_COLUMNS = ("id", "account", "type", *FIELDS, "provenance", "conflicts")

_PRETTY = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
NO_LLM = {
    "enabled": False,
    "requests": 0,
    "cached": 0,
    "tokens": {"prompt": 0, "completion": 0},
    "cost_usd": 0.0,
}


# Confidence bands of report.json's fields_by_confidence (and of the calibration measured on
# generated sets: `python -m bench.ledger_calibration`): (label, lowest, above the highest).
CONFIDENCE_BANDS = (
    ("1", 1.0, 1.01),
    ("[0.9, 1)", 0.9, 1.0),
    ("[0.7, 0.9)", 0.7, 0.9),
    ("[0, 0.7)", 0.0, 0.7),
)


def band_of(confidence: float) -> str:
    return next(label for label, lo, hi in CONFIDENCE_BANDS if lo <= confidence < hi)


def report_json(result: LedgerResult, llm: Mapping[str, Any] | None = None) -> dict[str, Any]:
    sources: Counter[str] = Counter()
    bands: Counter[str] = Counter()
    types: Counter[str] = Counter()
    conflicts = 0
    for tx in result.transactions:
        types[tx.type] += 1
        conflicts += len(tx.conflicts)
        for p in tx.provenance.values():
            sources[p.source] += 1
            bands[band_of(p.confidence)] += 1
    unresolved: Counter[str] = Counter(u["kind"] for u in result.unresolved)
    return {
        "inputs": [i.as_json() for i in result.inputs],
        "cutoff": iso_utc(result.cutoff_us),
        "accounts": len({tx.account for tx in result.transactions} | set(result.balances)),
        "transactions": len(result.transactions),
        "by_type": dict(sorted(types.items())),
        "fields_by_source": dict(sorted(sources.items())),
        "fields_by_confidence": {label: bands[label] for label, _, _ in CONFIDENCE_BANDS},
        "conflicting_fields": conflicts,
        "unresolved": dict(sorted(unresolved.items())),
        "problems": len(result.problems),
        "notes_linked_by_llm": len(result.links),
        "llm": dict(llm) if llm is not None else dict(NO_LLM),
    }


def ledger_lines(result: LedgerResult) -> bytes:
    return b"".join(
        orjson.dumps(tx.as_json(), option=orjson.OPT_SORT_KEYS) + b"\n" for tx in result.transactions
    )


def ledger_csv(result: LedgerResult) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for tx in result.transactions:
        row = tx.as_json()
        writer.writerow(
            [
                *(row[c] if row[c] is not None else "" for c in CSV_COLUMNS[:-2]),
                orjson.dumps(row["provenance"], option=orjson.OPT_SORT_KEYS).decode(),
                orjson.dumps(row["conflicts"], option=orjson.OPT_SORT_KEYS).decode(),
            ]
        )
    return buf.getvalue().encode()


def records(result: LedgerResult) -> Iterator[dict[str, Any]]:
    for i in result.inputs:
        yield {"type": "input", **i.as_json()}
    for tx in result.transactions:
        yield {"type": "transaction", "transaction": tx.as_json()}
    for link in result.links:
        yield {"type": "llm_link", **link}
    for u in result.unresolved:
        yield {"type": "unresolved", **u}
    for account, assets in sorted(result.balances.items()):
        yield {"type": "balance", "account": account, "cutoff": iso_utc(result.cutoff_us), "assets": assets}


def write(
    result: LedgerResult, out_dir: str, settings: Mapping[str, Any], llm: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    key = signing_key()
    os.makedirs(os.path.join(out_dir, AUDIT_DIR), exist_ok=True)
    report = report_json(result, llm)
    paths = {
        name: os.path.join(out_dir, name) for name in (LEDGER_JSONL, LEDGER_CSV, BALANCES, UNRESOLVED, REPORT)
    }
    atomic_write(paths[LEDGER_JSONL], ledger_lines(result))
    atomic_write(paths[LEDGER_CSV], ledger_csv(result))
    atomic_write(paths[BALANCES], orjson.dumps(result.balances, option=_PRETTY) + b"\n")
    atomic_write(
        paths[UNRESOLVED],
        b"".join(orjson.dumps(u, option=orjson.OPT_SORT_KEYS) + b"\n" for u in result.unresolved),
    )
    atomic_write(paths[REPORT], orjson.dumps(report, option=_PRETTY) + b"\n")
    records_path = os.path.join(out_dir, AUDIT_DIR, RECORDS_NAME)
    count, final = write_chain(records_path, records(result))
    inputs = [InputSummary(i.path, i.sha256) for i in result.inputs]
    sizes = {i.path: i.size for i in result.inputs}
    listing = manifest.build(
        out_dir, [*paths.values(), records_path], inputs, count, final, settings, key, sizes
    )
    manifest.write(out_dir, listing, key)
    return report
