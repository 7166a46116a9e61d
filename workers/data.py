"""Where a worker reads a segment's input bytes from.

- **Directly**, when the file is on this worker's disk as the producer saw it (same size and
  modification time): the embedded default and ``--workers N`` next to the producer.  The
  bytes are hashed as they are read and checked against the plan's SHA-256 at the end.
- **Through the broker** otherwise: the worker asks for the file (``RPUSH wants`` and a poke
  on ``wake``) and reads the stream ``data:<epoch>:<segment>:<generation>:<file>`` the
  producer fills, deleting each block once read and poking the producer so it tops the
  stream up at once (its window bounds Redis memory).  Plain-text inputs travel
  zlib-compressed (field ``z``), gzip ones as they are (``b``).  Each start of a segment
  takes a new generation, so a worker that died mid-file leaves nothing a later start
  depends on; a worker still waiting when another start took over (a newer generation, a
  producer that took the job over, the job ended) gives way.

``RETAPE_READ_INPUTS=broker`` makes every read go through the broker.
"""

from __future__ import annotations

import hashlib
import os
import time
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

from shared import keys
from shared.errors import DataCorrupt, FeederGone, Superseded
from shared.jobs import Field, FileRef
from shared.jobstore import JobStore, NotRunning

READ_BLOCK = 1 << 20
XREAD_BLOCK_MS = 1000
FEEDER_TIMEOUT_S = 60.0
FEEDER_RETRY_S = 30.0


def reads_directly() -> bool:
    return os.environ.get("RETAPE_READ_INPUTS", "auto") != "broker"


def unchanged_here(ref: FileRef) -> bool:
    """The file is on this machine as the producer saw it."""
    try:
        st = os.stat(ref.path)
    except OSError:
        return False
    return st.st_size == ref.size and st.st_mtime_ns == ref.mtime_ns and os.access(ref.path, os.R_OK)


def _check(ref: FileRef, digest: Any, length: int, how: str, digests: dict[str, str] | None) -> None:
    """The bytes read end to end are the ones submitted: their SHA-256 where the plan has it;
    where it left it to the workers (a big file), their length, and the digest is recorded in
    ``digests``."""
    got = digest.hexdigest()
    if ref.sha256 and got != ref.sha256:
        raise DataCorrupt(
            f"{ref.path}: the bytes {how} do not match the SHA-256 it was submitted with "
            "(changed since it was submitted?)"
        )
    if not ref.sha256 and length != ref.size:
        raise DataCorrupt(
            f"{ref.path}: {length} bytes {how}, {ref.size} when it was submitted "
            "(changed since it was submitted?)"
        )
    if digests is not None:
        digests[ref.path] = got


def direct_blocks(ref: FileRef, digests: dict[str, str] | None = None) -> Iterator[bytes]:
    digest = hashlib.sha256()
    length = 0
    with open(ref.path, "rb") as fh:
        while block := fh.read(READ_BLOCK):
            digest.update(block)
            length += len(block)
            yield block
    _check(ref, digest, length, "read from disk", digests)


class SegmentBlocks:
    """A block source (see ``shared.formats.lines.reading_from``) for one segment's start."""

    def __init__(
        self,
        store: JobStore,
        segment: int,
        files: Sequence[FileRef],
        direct: bool | None = None,
        feeder_timeout_s: float = FEEDER_TIMEOUT_S,
    ) -> None:
        self.store = store
        self.segment = segment
        self.files = {ref.path: (n, ref) for n, ref in enumerate(files)}
        self.direct = reads_directly() if direct is None else direct
        self.feeder_timeout_s = feeder_timeout_s
        self.gen: int | None = None  # taken at the first read through the broker
        self.attempt = 0  # the job's attempt then: a producer taking the job over changes it
        self.bytes_read = 0
        self.digests: dict[str, str] = {}  # SHA-256 of each file read to its end

    def __call__(self, path: str) -> Iterator[bytes]:
        file_no, ref = self.files[path]
        if self.direct and unchanged_here(ref):
            return direct_blocks(ref, self.digests)
        return self._through_broker(file_no, ref)

    def _through_broker(self, file_no: int, ref: FileRef) -> Iterator[bytes]:
        store = self.store
        client = store.client
        if self.gen is None:
            self.gen = store.next_generation(self.segment)
            self.attempt = store.count(Field.ATTEMPT)
        key = keys.job_data(store.job_id, int(store.epoch or 0), self.segment, self.gen, file_no)
        store.poke((keys.job_wants(store.job_id), f"{store.epoch}:{self.segment}:{self.gen}:{file_no}"))
        digest = hashlib.sha256()
        length = 0
        last = "0-0"
        idle_since = time.monotonic()
        while True:
            got: Any = client.xread({key: last}, count=4, block=XREAD_BLOCK_MS)
            if not got:
                self._check_waiting(ref.path, idle_since)
                continue
            idle_since = time.monotonic()
            entries = got[0][1]
            last = entries[-1][0]
            client.xdel(key, *[entry_id for entry_id, _ in entries])
            store.poke()  # the producer tops the stream up at once
            for _, fields in entries:
                if b"end" in fields:
                    client.delete(key)
                    if b"error" in fields:
                        problem = fields[b"error"].decode("utf-8", "replace")
                        raise DataCorrupt(f"{ref.path}: the producer cannot read it any more: {problem}")
                    _check(ref, digest, length, "received through the broker", self.digests)
                    return
                block = fields[b"b"] if b"b" in fields else zlib.decompress(fields[b"z"])
                digest.update(block)
                length += len(block)
                self.bytes_read += len(block)
                yield block

    def _check_waiting(self, path: str, idle_since: float) -> None:
        """Nothing arrived for a while: is anybody still going to send it?"""
        store = self.store
        if not store.running():
            raise NotRunning(f"job {store.job_id} is not running at epoch {store.epoch} any more")
        gen: Any = store.client.get(keys.job_gen(store.job_id, self.segment))
        if store.count(Field.ATTEMPT) != self.attempt:
            # Another producer took the job over (the one this start asked is gone); it sent
            # this segment again as a new task, which asks the new producer.
            raise Superseded(f"job {store.job_id} was taken over by another producer")
        if gen is not None and self.gen is not None and int(gen) > self.gen:
            raise Superseded(f"segment {self.segment} of job {store.job_id} was started again")
        if time.monotonic() - idle_since < self.feeder_timeout_s:
            return
        if store.lease_holder() is None:
            raise FeederGone(
                f"no producer is serving job {store.job_id} (waited {self.feeder_timeout_s:g}s for {path}): "
                "run `retape produce` (or `retape audit --broker`) on the same inputs again to resume",
                retry_after=FEEDER_RETRY_S,
            )
