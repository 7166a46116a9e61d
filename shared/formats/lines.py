"""Open a capture as a stream of lines, gzip or not, never reading it whole.

Where the bytes come from is a *block source*: by default the file itself; a worker that
receives a capture through Redis (see ``workers.data``) installs its own source with
:func:`reading_from`, and the readers above this module do not know the difference.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
MAX_LINE = 64 << 20

# Yielded instead of a line longer than MAX_LINE (whose bytes are skipped, not held).
LINE_TOO_LONG = b"\x00<line too long>"


BlockSource = Callable[[str], Iterable[bytes]]


def file_blocks(path: str) -> Iterator[bytes]:
    """The stored (possibly compressed) bytes of ``path`` in 1 MiB blocks."""
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            yield block


_SOURCE: ContextVar[BlockSource] = ContextVar("retape_block_source", default=file_blocks)


@contextmanager
def reading_from(source: BlockSource) -> Iterator[None]:
    """Read captures through ``source`` (path -> stored bytes) inside the block."""
    token = _SOURCE.set(source)
    try:
        yield
    finally:
        _SOURCE.reset(token)


def is_gzip(path: str) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def open_binary(path: str) -> IO[bytes]:
    """The decompressed bytes of ``path`` (gzip is recognised by its magic, not its name)."""
    source = _SOURCE.get()
    if source is not file_blocks:
        return io.BytesIO(b"".join(_raw_chunks(path)))
    if is_gzip(path):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


class TruncatedInput(Exception):
    """The compressed stream ended early or is corrupt; carries the reason."""


def _raw_chunks(path: str) -> Iterator[bytes]:
    """Decompressed chunks of ``path``: gzip (every member) by its magic, else the bytes as they are.

    Output per step is bounded, so a small file that inflates hugely is still streamed.
    """
    blocks = iter(_SOURCE.get()(path))
    first = b""
    for block in blocks:
        first += block
        if len(first) >= 2:
            break
    if not first.startswith(GZIP_MAGIC):
        if first:
            yield first
        yield from blocks
        return
    d = zlib.decompressobj(31)
    for raw in _chain(first, blocks):
        while raw:
            try:
                out = d.decompress(raw, _CHUNK * 4)
            except zlib.error as exc:
                raise TruncatedInput(f"corrupt gzip data ({exc})") from exc
            if out:
                yield out
            if d.eof:
                raw = d.unused_data
                if raw:
                    if not raw.startswith(GZIP_MAGIC[: len(raw)]):
                        raise TruncatedInput("data after the end of the gzip stream")
                    d = zlib.decompressobj(31)
            else:
                raw = d.unconsumed_tail
    if not d.eof:
        raise TruncatedInput("compressed stream is cut off")


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def line_blocks(path: str) -> Iterator[bytes]:
    """The decompressed text of ``path`` in blocks of whole lines (each block ends with a line
    end, but the last, which ends where the file ends); ``LINE_TOO_LONG`` in place of a line
    longer than ``MAX_LINE``, whose bytes are skipped.  Raises :class:`TruncatedInput` after
    the last complete line, as :func:`iter_lines` does."""
    rest = b""
    skipping = False
    for chunk in _raw_chunks(path):
        if skipping:
            cut = chunk.find(b"\n")
            if cut < 0:
                continue
            skipping = False
            yield LINE_TOO_LONG
            chunk = chunk[cut + 1 :]
            rest = b""
        end = chunk.rfind(b"\n")
        if end < 0:
            rest += chunk
        else:
            yield rest + chunk[: end + 1] if rest else chunk[: end + 1]
            rest = chunk[end + 1 :]
        if len(rest) > MAX_LINE:
            rest = b""
            skipping = True
    if skipping:
        yield LINE_TOO_LONG
    elif rest:
        yield rest


def span_blocks(path: str, start: int, end: int) -> Iterator[bytes]:
    """The lines of plain file ``path`` that start in bytes [start, end) (``start`` a line
    start), read from the file itself in blocks of whole lines (the last may end where the file
    ends); ``LINE_TOO_LONG`` in place of a line longer than ``MAX_LINE``, as :func:`line_blocks`."""
    with open(path, "rb") as fh:
        fh.seek(start)
        pos = start  # the file offset of rest[0] (of the next byte read, when skipping)
        rest = b""
        skipping = False  # inside a line longer than MAX_LINE: its bytes are dropped
        while True:
            if not rest and not skipping and pos >= end:
                return
            chunk = fh.read(_CHUNK)
            if not chunk:
                if skipping:
                    yield LINE_TOO_LONG
                elif rest:
                    yield rest
                return
            if skipping:
                cut = chunk.find(b"\n")
                if cut < 0:
                    pos += len(chunk)
                    continue
                skipping = False
                yield LINE_TOO_LONG
                pos += cut + 1
                chunk = chunk[cut + 1 :]
                if pos >= end or not chunk:
                    continue
            data = rest + chunk if rest else chunk
            if pos + len(data) >= end:
                cut = data.find(b"\n", max(0, end - 1 - pos))
                if cut >= 0:
                    yield data[: cut + 1]
                    return
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
            else:
                yield data[: cut + 1]
                rest = data[cut + 1 :]
                pos += cut + 1
            if len(rest) > MAX_LINE:
                pos += len(rest)
                rest = b""
                skipping = True


def line_start(path: str, offset: int) -> int:
    """The offset of the first line of plain file ``path`` that starts at or after ``offset``."""
    if offset <= 0:
        return 0
    with open(path, "rb") as fh:
        fh.seek(offset - 1)
        pos = offset - 1
        while block := fh.read(1 << 16):
            cut = block.find(b"\n")
            if cut >= 0:
                return pos + cut + 1
            pos += len(block)
    return pos


def iter_lines(path: str) -> Iterator[bytes]:
    """Lines of ``path`` without their line ends, read in 1 MiB chunks.

    Raises :class:`TruncatedInput` after the last complete line when the gzip stream is
    cut off or corrupt (the incomplete line is not yielded), so the caller can record it
    and go on.  A line longer than ``MAX_LINE`` is not held: ``LINE_TOO_LONG`` stands in.
    """
    for block in line_blocks(path):
        if block is LINE_TOO_LONG:
            yield block
            continue
        lines = block.split(b"\n")
        if block.endswith(b"\n"):
            lines.pop()
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            yield line


def _strip_cr(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\r") else line


def head_lines(path: str, count: int, max_bytes: int = 1 << 20) -> list[bytes]:
    """Up to ``count`` first lines (for recognising the format).

    A compressed stream that breaks after some lines gives those lines (the reader will
    record the break); one that yields no line at all raises :class:`TruncatedInput`.
    """
    out: list[bytes] = []
    size = 0
    try:
        for line in iter_lines(path):
            out.append(line)
            size += len(line)
            if len(out) >= count or size >= max_bytes:
                break
    except TruncatedInput:
        if not out:
            raise
    return out
