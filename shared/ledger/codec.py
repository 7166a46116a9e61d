"""A ledger between the stages of a ``ledger`` job: everything the LLM stage and the outputs
need (inputs, transactions, notes, unresolved items, problems, balances, cutoff), as
compressed JSON.  Exact: decimals travel as their text, confidences as the floats they are,
so a ledger decoded and written gives the bytes the same ledger gives in one process."""

from __future__ import annotations

import zlib
from decimal import Decimal
from typing import Any

import orjson

from shared.ledger.fragments import Fragment, Problem
from shared.ledger.merge import Provenance, Transaction
from shared.ledger.reconstruct import Input, LedgerResult
from shared.ledger.schemas import Kind

VERSION = 1


def _input(i: Input) -> list[Any]:
    return [i.path, i.sha256, i.size, i.records, i.problems, i.error]


def _provenance(p: Provenance) -> list[Any]:
    return [p.source, p.confidence, p.fragments, p.model, p.prompt]


def _transaction(t: Transaction) -> dict[str, Any]:
    return {
        "id": t.id,
        "account": t.account,
        "type": t.type,
        "values": t.values,
        "provenance": {k: _provenance(p) for k, p in t.provenance.items()},
        "conflicts": t.conflicts,
        "quote_asset": t.quote_asset,
        "quote_amount": None if t.quote_amount is None else str(t.quote_amount),
        "quote_source": t.quote_source,
        "time_us": t.time_us,
        "fragments": t.fragments,
        "status": t.status,
    }


def _from_transaction(d: dict[str, Any]) -> Transaction:
    return Transaction(
        d["id"],
        d["account"],
        d["type"],
        dict(d["values"]),
        {k: Provenance(p[0], float(p[1]), list(p[2]), p[3], p[4]) for k, p in d["provenance"].items()},
        {k: list(v) for k, v in d["conflicts"].items()},
        d["quote_asset"],
        None if d["quote_amount"] is None else Decimal(d["quote_amount"]),
        d["quote_source"],
        d["time_us"],
        list(d["fragments"]),
        d["status"],
    )


def _fragment(f: Fragment) -> list[Any]:
    return [
        f.id,
        f.account,
        f.path,
        f.line,
        None if f.kind is None else f.kind.value,
        f.fields,
        f.text,
        f.hint,
    ]


def _from_fragment(d: list[Any]) -> Fragment:
    fid, account, path, line, kind, fields, text, hint = d
    return Fragment(
        fid, account, path, int(line), None if kind is None else Kind(kind), dict(fields), text, hint
    )


def encode(result: LedgerResult, extra: dict[str, Any] | None = None) -> bytes:
    """``result`` (without its observations: nothing after the first stage needs them) and
    ``extra`` (the LLM stage's usage), compressed."""
    body = {
        "version": VERSION,
        "inputs": [_input(i) for i in result.inputs],
        "transactions": [_transaction(t) for t in result.transactions],
        "balances": result.balances,
        "unresolved": result.unresolved,
        "notes": [_fragment(f) for f in result.notes],
        "problems": [[p.path, p.line, p.reason] for p in result.problems],
        "cutoff_us": result.cutoff_us,
        "links": result.links,
        "extra": extra or {},
    }
    return zlib.compress(orjson.dumps(body), 6)


def decode(raw: bytes) -> tuple[LedgerResult, dict[str, Any]]:
    body = orjson.loads(zlib.decompress(raw))
    if body.get("version") != VERSION:
        raise ValueError(f"a ledger stage result of version {body.get('version')!r}, not {VERSION}")
    inputs = [Input(p, s, int(n), int(r), int(b), e) for p, s, n, r, b, e in body["inputs"]]
    result = LedgerResult(
        inputs,
        [_from_transaction(t) for t in body["transactions"]],
        body["balances"],
        list(body["unresolved"]),
        [_from_fragment(f) for f in body["notes"]],
        [],
        [Problem(p, int(n), r) for p, n, r in body["problems"]],
        int(body["cutoff_us"]),
        list(body["links"]),
    )
    return result, dict(body["extra"])
