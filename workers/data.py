"""A worker's view of a job's inputs: the bytes the producer streams into Redis.

The worker asks for one input file of its segment (``RPUSH wants``) and reads the file's
stored bytes from the stream ``data:<segment>:<generation>:<file>`` as the producer adds
them, deleting each block once read, so the producer can keep Redis memory bounded (it
adds a block only while fewer than its window are unread).  Each start of a segment uses a
new generation, so a worker that died mid-file leaves nothing a later start depends on:
the later start asks for the file again from its first byte.

The blocks are checked against the input's SHA-256 from the plan before the file counts
as read.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

import redis

from shared import keys
from shared.errors import DataCorrupt, FeederGone, Superseded

READ_BLOCK_MS = 1000
FEEDER_TIMEOUT_S = 60.0


class RedisBlocks:
    """A block source (see ``shared.formats.lines.reading_from``) over the job's streams."""

    def __init__(
        self,
        client: redis.Redis,
        job_id: str,
        index: int,
        gen: int,
        files: Mapping[str, tuple[int, str | None]],
        feeder_timeout_s: float = FEEDER_TIMEOUT_S,
    ) -> None:
        self.client = client
        self.job_id = job_id
        self.index = index
        self.gen = gen
        self.files = files  # path -> (file number in the plan, sha256)
        self.feeder_timeout_s = feeder_timeout_s
        self.bytes_read = 0

    def __call__(self, path: str) -> Iterator[bytes]:
        file_no, expected = self.files[path]
        client = self.client
        key = keys.job_data(self.job_id, self.index, self.gen, file_no)
        client.rpush(keys.job_wants(self.job_id), f"{self.index}:{self.gen}:{file_no}")
        digest = hashlib.sha256()
        last = "0-0"
        idle_since = time.monotonic()
        while True:
            got: Any = client.xread({key: last}, count=4, block=READ_BLOCK_MS)
            if not got:
                self._check_waiting(path, idle_since)
                continue
            idle_since = time.monotonic()
            for entry_id, fields in got[0][1]:
                last = entry_id
                client.xdel(key, entry_id)
                if b"end" in fields:
                    client.delete(key)
                    if b"error" in fields:
                        problem = fields[b"error"].decode("utf-8", "replace")
                        raise DataCorrupt(f"{path}: the producer cannot read it any more: {problem}")
                    if expected is not None and digest.hexdigest() != expected:
                        raise DataCorrupt(
                            f"{path}: the bytes received through the broker do not match the file's "
                            "SHA-256 (changed since it was submitted?)"
                        )
                    return
                block = fields[b"b"]
                digest.update(block)
                self.bytes_read += len(block)
                yield block

    def _check_waiting(self, path: str, idle_since: float) -> None:
        gen = self.client.get(keys.job_gen(self.job_id, self.index))
        if gen is not None and int(gen) > self.gen:
            raise Superseded(f"segment {self.index} of job {self.job_id} was started again")
        if time.monotonic() - idle_since < self.feeder_timeout_s:
            return
        if not self.client.exists(keys.job_feeder(self.job_id)):
            raise FeederGone(
                f"no producer is serving job {self.job_id} (waited {self.feeder_timeout_s:g}s for {path}): "
                "it stopped before the job finished; run `retape produce` (or `retape audit --broker`) "
                "on the same inputs again to resume"
            )
