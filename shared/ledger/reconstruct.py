"""The deterministic ledger of a set of fragment files: read, observe, correlate, merge, and
say what was left unresolved.  Reads the files it is given; no network, no broker."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.ledger.balances import balances
from shared.ledger.fragments import Fragment, Problem, read_fragments
from shared.ledger.merge import Transaction, build
from shared.ledger.observe import Observation, observe
from shared.planning import expand_paths, shown_path

# Fragment files larger than this are refused (a fragment set is exports and logs, not captures).
MAX_FILE_BYTES = 256 << 20


@dataclass(slots=True)
class Input:
    path: str
    sha256: str = ""
    size: int = 0
    records: int = 0  # fragments read from it
    problems: int = 0
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "fragments": self.records,
            "problems": self.problems,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(slots=True)
class LedgerResult:
    inputs: list[Input]
    transactions: list[Transaction]
    balances: dict[str, Any]
    unresolved: list[dict[str, Any]]
    notes: list[Fragment]
    observations: list[Observation]
    problems: list[Problem] = field(default_factory=list)
    cutoff_us: int = 0
    # Notes the LLM tied to a transaction the fragments hold: {"note", "transaction", "model",
    # "prompt_sha256", "confidence"} (in the audit records; a field the transaction lacked is
    # also filled, with source llm).
    links: list[dict[str, Any]] = field(default_factory=list)


def survey(paths: Sequence[str]) -> list[Input]:
    """The fragment files under ``paths``, each hashed (what a job's plan holds), or with the
    reason it cannot be read."""
    inputs: list[Input] = []
    for entry in expand_paths(paths):
        item = Input(entry.path)
        inputs.append(item)
        if entry.problem is not None:
            item.error = entry.problem
            continue
        try:
            size = os.path.getsize(entry.path)
            if size > MAX_FILE_BYTES:
                item.error = f"larger than {MAX_FILE_BYTES >> 20} MB: not a fragment file"
                continue
            digest = hashlib.sha256()
            with open(entry.path, "rb") as fh:
                while block := fh.read(1 << 20):
                    digest.update(block)
                    item.size += len(block)
        except OSError as exc:
            item.error = f"cannot read: {exc.strerror or exc}"
            continue
        item.sha256 = digest.hexdigest()
    return inputs


def _read_file(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def reconstruct(paths: Sequence[str], cutoff_us: int) -> LedgerResult:
    """The ledger of the fragment files under ``paths`` (read here, from disk)."""
    return reconstruct_inputs(survey(paths), root_of(paths), cutoff_us, _read_file)


def reconstruct_inputs(
    inputs: Sequence[Input], root: str, cutoff_us: int, read: Callable[[str], bytes]
) -> LedgerResult:
    """The ledger of surveyed inputs, their bytes from ``read`` (a worker reads through the
    job's block source).  Fragment ids are named relative to ``root``."""
    shown: list[Input] = []
    fragments: list[Fragment] = []
    problems: list[Problem] = []
    for given in inputs:
        item = Input(shown_path(given.path), given.sha256, given.size, error=given.error)
        shown.append(item)
        if item.error is not None:
            continue
        try:
            data = read(given.path)
        except OSError as exc:
            item.error = f"cannot read: {exc.strerror or exc}"
            continue
        if hashlib.sha256(data).hexdigest() != given.sha256:
            item.error = "changed while it was read (its SHA-256 is not the one first read)"
            continue
        got, bad = read_fragments(given.path, data, _name(given.path, root))
        item.records = len(got)
        item.problems = len(bad)
        fragments += got
        problems += bad
    observations = [o for f in fragments for o in observe(f)]
    notes = [f for f in fragments if f.kind is None]
    transactions, grouping, ordered = build(observations)
    unresolved = _unresolved(notes, grouping.ambiguous, ordered, transactions, problems)
    unresolved += [
        {"kind": "unread_input", "account": None, "fragments": [], "path": i.path, "reason": i.error}
        for i in shown
        if i.error is not None
    ]
    unresolved.sort(key=lambda u: (str(u.get("account")), u["kind"], u["fragments"], u.get("path", "")))
    return LedgerResult(
        shown,
        transactions,
        balances(transactions, cutoff_us),
        unresolved,
        notes,
        ordered,
        problems,
        cutoff_us,
    )


def root_of(paths: Sequence[str]) -> str:
    """The directory fragment ids are named from: the inputs' common directory."""
    full = [os.path.abspath(p) for p in paths]
    common = os.path.commonpath(full) if full else os.getcwd()
    return common if os.path.isdir(common) else os.path.dirname(common)


def _name(path: str, root: str) -> str:
    rel = os.path.relpath(os.path.abspath(path), root)
    return rel.replace(os.sep, "/") if not rel.startswith("..") else os.path.basename(path)


def _unresolved(
    notes: list[Fragment],
    ambiguous: list[tuple[int, list[int], str]],
    obs: list[Observation],
    transactions: list[Transaction],
    problems: list[Problem],
) -> list[dict[str, Any]]:
    """Everything the deterministic stage could not settle, each with its reason."""
    out: list[dict[str, Any]] = []
    for note in notes:
        out.append(
            {
                "kind": "note",
                "account": note.account,
                "fragments": [note.id],
                "text": note.text,
                "reason": "free text: read only by the LLM stage (RETAPE_LLM_BASE_URL is not set)",
            }
        )
    for i, candidates, why in ambiguous:
        out.append(
            {
                "kind": "ambiguous_match",
                "account": obs[i].account,
                "fragments": [obs[i].fragment],
                "candidates": sorted({obs[j].fragment for j in candidates}),
                "reason": why,
            }
        )
    for o in obs:
        if o.problems:
            out.append(
                {
                    "kind": "unreadable_values",
                    "account": o.account,
                    "fragments": [o.fragment],
                    "reason": "; ".join(o.problems),
                }
            )
    for tx in transactions:
        if tx.type == "transfer":
            out.append(
                {
                    "kind": "unmatched_chain_transfer",
                    "account": tx.account,
                    "fragments": tx.fragments,
                    "reason": "a chain transfer that no deposit or withdrawal claims: in no balance",
                }
            )
        if tx.time_us is None:
            out.append(
                {
                    "kind": "no_time",
                    "account": tx.account,
                    "fragments": tx.fragments,
                    "reason": f"{tx.id} has no time: not in any balance",
                }
            )
    for p in problems:
        out.append(
            {
                "kind": "unreadable_record",
                "account": None,
                "fragments": [f"{os.path.basename(p.path)}:{p.line}"],
                "path": p.path,
                "line": p.line,
                "reason": p.reason,
            }
        )
    out.sort(key=lambda u: (str(u.get("account")), u["kind"], u["fragments"]))
    return out
