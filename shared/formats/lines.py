"""Open a capture as a stream of lines, gzip or not, never reading it whole."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from typing import IO

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
MAX_LINE = 64 << 20

# Yielded instead of a line longer than MAX_LINE (whose bytes are skipped, not held).
LINE_TOO_LONG = b"\x00<line too long>"


def is_gzip(path: str) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def open_binary(path: str) -> IO[bytes]:
    """The decompressed bytes of ``path`` (gzip is recognised by its magic, not its name)."""
    if is_gzip(path):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


class TruncatedInput(Exception):
    """The compressed stream ended early or is corrupt; carries the reason."""


def iter_lines(path: str) -> Iterator[bytes]:
    """Lines of ``path`` without their line ends, read in 1 MiB chunks.

    Raises :class:`TruncatedInput` after the last complete line when the gzip stream is
    cut off or corrupt, so the caller can record it and go on with the next input.  A
    line longer than ``MAX_LINE`` is not held: ``LINE_TOO_LONG`` stands in for it.
    """
    fh = open_binary(path)
    try:
        rest = b""
        skipping = False
        while True:
            try:
                chunk = fh.read(_CHUNK)
            except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
                if rest and not skipping:
                    yield _strip_cr(rest)
                raise TruncatedInput(f"compressed stream is cut off or corrupt ({exc})") from exc
            if not chunk:
                if rest and not skipping:
                    yield _strip_cr(rest)
                return
            lines = chunk.split(b"\n")
            if skipping:
                if len(lines) == 1:
                    continue
                skipping = False
                lines[0] = b""
                yield LINE_TOO_LONG
                rest = b""
                lines = lines[1:]
                if not lines:
                    continue
            lines[0] = rest + lines[0]
            rest = lines.pop()
            if len(rest) > MAX_LINE:
                rest = b""
                skipping = True
            for line in lines:
                if line.endswith(b"\r"):
                    line = line[:-1]
                yield line
    finally:
        fh.close()


def _strip_cr(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\r") else line


def head_lines(path: str, count: int, max_bytes: int = 1 << 20) -> list[bytes]:
    """Up to ``count`` first lines (for recognising the format); never raises on a bad gzip."""
    out: list[bytes] = []
    size = 0
    try:
        for line in iter_lines(path):
            out.append(line)
            size += len(line)
            if len(out) >= count or size >= max_bytes:
                break
    except TruncatedInput:
        pass
    return out
