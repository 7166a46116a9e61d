"""The SHA-256 of a big input, computed by the workers rather than by the planner.

The report names every input by its SHA-256.  Computed while planning, it is one more read of
the whole file, on one core, before any work is shared out: for one 350 MB recording cut into
chunks that was a sixth of the audit's work, done in series.  So a plain capture big enough
to be cut (:func:`hashed_by_workers`) is planned without it:

- the job's id names it by a quick identity instead (:func:`identity`: size, modification
  and change times, inode, and the SHA-256 of its first and last MB), so the same submission
  twice is still the same job, and any write to the file makes a new one;
- a worker computes it: beside the chunks, as one more sub-task (:func:`run_hash`), or while
  it reads the file whole (``workers.data`` hashes every file it reads to the end);
- the segment's result carries it (:func:`fill_in`), and the report takes it from there.

The digest is of the bytes on disk when the worker read them, checked against the plan's
size and modification time like every direct read; a file changed since the plan is then
read whole through the worker's usual source.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

from shared.chunking import chunk_bytes, is_plain, size_and_mtime, smallest_cut
from shared.planning import InputSummary, sha256_of

EDGE_BYTES = 1 << 20  # read from each end of a file for its quick identity


def hashed_by_workers(path: str) -> bool:
    """``path`` is a plain file big enough to be cut into chunks (``RETAPE_CHUNK_MB``): its
    SHA-256 is left to the workers."""
    size_of_chunk = chunk_bytes()
    here = size_and_mtime(path) if size_of_chunk else None
    return here is not None and here[0] >= smallest_cut(size_of_chunk) and is_plain(path)


def identity(path: str) -> str:
    """What names a file in a job's id while its SHA-256 is not known yet."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            digest = hashlib.sha256(fh.read(EDGE_BYTES))
            fh.seek(max(0, st.st_size - EDGE_BYTES))
            digest.update(fh.read(EDGE_BYTES))
    except OSError as exc:
        return f"unreadable:{exc.strerror or exc}"
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{digest.hexdigest()}"


def hash_args(path: str, size: int, mtime_ns: int) -> dict[str, Any]:
    """The sub-task that hashes ``path`` as it was planned."""
    return {"hash": {"path": path, "size": size, "mtime_ns": mtime_ns}}


def run_hash(args: Mapping[str, Any]) -> bytes:
    """A worker's sub-task: the SHA-256 (hex) of the file as it was planned, or nothing when
    it is not here as planned (the segment's last stage then reads it whole)."""
    return local_digest(args["path"], (int(args["size"]), int(args["mtime_ns"]))).encode()


def local_digest(path: str, planned: tuple[int, int] | None) -> str:
    """The SHA-256 of ``path`` read here, when it is as planned (``planned``: size and
    modification time) before and after, else empty."""
    if planned is None or size_and_mtime(path) != planned:
        return ""
    try:
        digest = sha256_of(path)
    except OSError:
        return ""
    return digest if size_and_mtime(path) == planned else ""


def fill_in(
    inputs: Sequence[InputSummary],
    known: Mapping[str, str],
    planned: Mapping[str, tuple[int, int]],
) -> None:
    """Give every input of a segment's result left without its SHA-256 the one a worker
    computed (``known``), or else the one of the file as it is here (when it is as planned)."""
    for summary in inputs:
        if not summary.sha256:
            summary.sha256 = known.get(summary.path) or local_digest(summary.path, planned.get(summary.path))
