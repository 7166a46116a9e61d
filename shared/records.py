"""The tamper-evident audit records: JSON lines, each carrying its sequence number and the
SHA-256 of the line before it (the first: ``GENESIS``), so changing, dropping or reordering
any line breaks the chain that ``retape verify`` and the MANIFEST check."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import IO, Any

from shared.jsonout import write_json
from shared.manifest import GENESIS
from shared.outdir import atomic_file


def _write_record(fh: IO[bytes], record: dict[str, Any]) -> str:
    """Write one audit record as a line; return the SHA-256 of the line (without its newline)."""
    digest = hashlib.sha256()

    def write(data: bytes) -> None:
        fh.write(data)
        digest.update(data)

    write_json(write, record, sort_keys=True)
    fh.write(b"\n")
    return digest.hexdigest()


def write_chain(path: str, records: Iterable[dict[str, Any]]) -> tuple[int, str]:
    """Write ``records`` (each gets ``seq`` and ``prev``) to ``path`` atomically, streaming;
    return how many and the final hash."""
    prev = GENESIS
    count = 0
    with atomic_file(path) as fh:
        for seq, record in enumerate(records):
            record["seq"] = seq
            record["prev"] = prev
            prev = _write_record(fh, record)
            count += 1
    return count, prev
