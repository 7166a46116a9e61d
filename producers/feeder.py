"""The producer's data side: stream each input file a worker asks for into Redis.

Workers that cannot read an input on their own disk ask for it (``wants``, and a poke on
``wake``).  The feeder adds the file's bytes to the stream that worker reads, 1 MiB per
entry, zlib-compressed when the file is plain text (gzip files go as they are), and keeps
at most ``window`` unread entries per stream: the worker deletes what it has read and pokes
``wake``, and the feeder, blocked on ``wake``, tops the stream up at once.  Redis never
holds more than ``window`` blocks per file being read:

    window x block size x (segment tasks reading at once x files read together)

e.g. 8 x 1 MiB x 4 workers = 32 MiB for four workers on single-file segments.

The feeder does not hash: the plan holds each file's SHA-256 (hashed once, when planned)
and the worker checks the bytes it receives against it.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import IO, Any

import redis

from shared import keys
from shared.jobs import FileRef
from shared.jobstore import JOB_TTL_S

log = logging.getLogger("retape.producer")

BLOCK_SIZE = 1 << 20
WINDOW_BLOCKS = 8
COMPRESS_LEVEL = 1  # ~200 MB/s of JSON text into ~18 % of its size


@dataclass(slots=True)
class _Transfer:
    key: str
    fh: IO[bytes]
    compress: bool
    sent: int = 0


class Feeder:
    def __init__(
        self,
        client: redis.Redis,
        job_id: str,
        epoch: int,
        files: list[FileRef],
        window: int = WINDOW_BLOCKS,
        block_size: int = BLOCK_SIZE,
    ) -> None:
        self.client = client
        self.job_id = job_id
        self.epoch = epoch
        self.files = files
        self.window = window
        self.block_size = block_size
        self.transfers: dict[tuple[int, int, int], _Transfer] = {}
        self.latest_gen: dict[int, int] = {}
        self.bytes_read = 0  # from the files
        self.bytes_sent = 0  # into Redis, compressed
        self.peak_unread_blocks = 0

    def close(self) -> None:
        for t in self.transfers.values():
            t.fh.close()
        self.transfers.clear()

    def pump(self) -> bool:
        """Take new requests and top every stream up to the window; True when anything moved."""
        took = self._take_wants()
        return self._send() or took

    def _take_wants(self) -> bool:
        wants: Any = self.client.lpop(keys.job_wants(self.job_id), 256)
        for raw in wants or []:
            self._want(raw)
        return bool(wants)

    def _want(self, raw: bytes) -> None:
        try:
            epoch, segment, gen, file_no = (int(x) for x in raw.decode().split(":"))
            ref = self.files[file_no]
        except (ValueError, IndexError, UnicodeDecodeError):
            log.error("job %s: ignoring a malformed data request %r", self.job_id, raw[:80])
            return
        if epoch != self.epoch:
            return  # a worker of another start of the job
        if gen < self.latest_gen.get(segment, 0):
            return  # a start that was superseded already
        if gen > self.latest_gen.get(segment, 0):
            self._drop_segment(segment)
            self.latest_gen[segment] = gen
        slot = (segment, gen, file_no)
        if slot in self.transfers:
            return
        key = keys.job_data(self.job_id, self.epoch, segment, gen, file_no)
        try:
            fh = open(ref.path, "rb")  # noqa: SIM115 (closed when the transfer ends)
        except OSError as exc:
            log.error("job %s: cannot read %s any more: %s", self.job_id, ref.path, exc)
            self.client.xadd(key, {"end": b"1", "error": (exc.strerror or str(exc)).encode()})
            return
        self.transfers[slot] = _Transfer(key, fh, compress=not ref.gzip)

    def _drop_segment(self, segment: int) -> None:
        """A newer start of ``segment`` asked: what older starts were sent is useless now."""
        for slot in [s for s in self.transfers if s[0] == segment]:
            t = self.transfers.pop(slot)
            t.fh.close()
            self.client.delete(t.key)

    def _send(self) -> bool:
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
                    pipe.xadd(t.key, {"end": b"1"})
                    t.fh.close()
                    del self.transfers[slot]
                    break
                self.bytes_read += len(block)
                if t.compress:
                    packed = zlib.compress(block, COMPRESS_LEVEL)
                    pipe.xadd(t.key, {"z": packed})
                else:
                    packed = block
                    pipe.xadd(t.key, {"b": packed})
                pipe.expire(t.key, JOB_TTL_S)  # gone with the job's other keys if nobody reads it
                t.sent += len(block)
                self.bytes_sent += len(packed)
                sent = True
        pipe.execute()
        return sent
