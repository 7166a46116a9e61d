"""The producer's data side: stream each input file a worker asks for into Redis.

A worker starting on a segment asks for its files one at a time (``wants``).  The feeder
adds the file's stored bytes to the stream the worker reads, one block (1 MiB) per entry,
and keeps at most ``window`` unread blocks per stream: the worker deletes what it has read,
so the feeder waits (backpressure) and Redis never holds more than ``window`` blocks per
file being read.  Files are read by one segment at a time, so the bound for a job is

    window x block size x (book tasks running at once x files read together, 1 or 2)

e.g. 8 x 1 MiB x 4 workers = 32 MiB for four workers on single-file segments.

While it serves, the feeder holds the lease ``feeder`` (renewed); workers waiting without a
lease give up with a clear message, and a producer started later takes the job over.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import redis

from shared import keys
from shared.engine import Plan

log = logging.getLogger("retape.producer")

BLOCK_SIZE = 1 << 20
WINDOW_BLOCKS = 8
LEASE_S = 15
IDLE_WAIT_S = 0.02


@dataclass(slots=True)
class _Transfer:
    index: int
    gen: int
    file_no: int
    key: str
    fh: IO[bytes]
    sha: hashlib._Hash = field(default_factory=hashlib.sha256)
    sent: int = 0


class Feeder:
    def __init__(
        self,
        client: redis.Redis,
        job_id: str,
        job: Plan,
        window: int = WINDOW_BLOCKS,
        block_size: int = BLOCK_SIZE,
    ) -> None:
        self.client = client
        self.job_id = job_id
        self.paths = [i.path for i in job.inputs]
        self.window = window
        self.block_size = block_size
        self.transfers: dict[tuple[int, int, int], _Transfer] = {}
        self.latest_gen: dict[int, int] = {}
        self.bytes_sent = 0
        self.peak_unread_blocks = 0
        self._lease_at = 0.0

    # -- the lease (taken by ``submit``, renewed here) --------------------------------

    def _renew(self) -> None:
        if time.monotonic() - self._lease_at > LEASE_S / 3:
            self.client.set(keys.job_feeder(self.job_id), "1", ex=LEASE_S)
            self._lease_at = time.monotonic()

    def release(self) -> None:
        for t in self.transfers.values():
            t.fh.close()
        self.transfers.clear()
        self.client.delete(keys.job_feeder(self.job_id))

    # -- serving ---------------------------------------------------------------------

    def serve(self, finished: Callable[[], bool], tick: Callable[[], None] | None = None) -> None:
        """Answer workers' requests until ``finished()``; ``tick`` runs about every 50 ms."""
        try:
            while not finished():
                self._renew()
                busy = self._take_wants()
                busy = self._send() or busy
                if tick is not None:
                    tick()
                if not busy:
                    got: Any = self.client.blpop([keys.job_wants(self.job_id)], timeout=IDLE_WAIT_S)
                    if got is not None:
                        self._want(got[1])
        finally:
            self.release()

    def _take_wants(self) -> bool:
        wants: Any = self.client.lpop(keys.job_wants(self.job_id), 64)
        for raw in wants or []:
            self._want(raw)
        return bool(wants)

    def _want(self, raw: bytes) -> None:
        try:
            index, gen, file_no = (int(x) for x in raw.decode().split(":"))
            path = self.paths[file_no]
        except (ValueError, IndexError, UnicodeDecodeError):
            log.error("job %s: ignoring a malformed data request %r", self.job_id, raw[:80])
            return
        if gen < self.latest_gen.get(index, 0):
            return  # a start that was superseded already
        if gen > self.latest_gen.get(index, 0):
            self._drop_segment(index)
            self.latest_gen[index] = gen
        slot = (index, gen, file_no)
        if slot in self.transfers:
            return
        key = keys.job_data(self.job_id, index, gen, file_no)
        try:
            fh = open(path, "rb")  # noqa: SIM115 (closed when the transfer ends)
        except OSError as exc:
            # The worker's checksum will fail on the empty stream; say why here too.
            log.error("job %s: cannot read %s any more: %s", self.job_id, path, exc)
            self.client.xadd(key, {"end": b"1", "error": str(exc).encode()})
            return
        self.transfers[slot] = _Transfer(index, gen, file_no, key, fh)

    def _drop_segment(self, index: int) -> None:
        """A newer start of ``index`` asked: what older starts were sent is useless now."""
        for slot in [s for s in self.transfers if s[0] == index]:
            t = self.transfers.pop(slot)
            t.fh.close()
            self.client.delete(t.key)

    def _send(self) -> bool:
        """Top every stream up to the window; True when anything was sent."""
        if not self.transfers:
            return False
        slots = list(self.transfers)
        pipe = self.client.pipeline(transaction=False)
        for slot in slots:
            pipe.xlen(self.transfers[slot].key)
        unread = pipe.execute()
        sent = False
        pipe = self.client.pipeline(transaction=False)
        for slot, waiting in zip(slots, unread, strict=True):
            self.peak_unread_blocks = max(self.peak_unread_blocks, int(waiting))
            t = self.transfers[slot]
            for _ in range(self.window - int(waiting)):
                block = t.fh.read(self.block_size)
                if not block:
                    pipe.xadd(t.key, {"end": b"1", "sha256": t.sha.hexdigest().encode()})
                    t.fh.close()
                    del self.transfers[slot]
                    break
                t.sha.update(block)
                t.sent += len(block)
                self.bytes_sent += len(block)
                pipe.xadd(t.key, {"b": block})
                sent = True
        pipe.execute()
        return sent
