"""Lists that go to disk as they grow: findings and malformed lines, however many there are.

A :class:`Spool` keeps its items in order: the first :data:`MEMORY` in memory, the rest as
JSON lines in an anonymous temporary file (gone when the spool is, or when the process ends,
however it ends).  Memory stays flat whatever an input holds: a capture with half a million
findings costs a few thousand of them in memory.  Items are JSON-able rows once encoded;
integers beyond 64 bits (which JSON readers cannot hold) are written as text, as the
report writes them.
"""

from __future__ import annotations

import heapq
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any, Generic, TypeVar

import orjson

T = TypeVar("T")
MEMORY = 4096
_INT64 = 2**63


def safe_json(obj: Any) -> Any:
    """``obj`` as JSON can hold it exactly: integers beyond 64 bits (which JSON readers cannot
    hold) as text, mapping keys as text, anything else JSON has no type for as its text."""
    if type(obj) is int:
        return obj if -_INT64 <= obj < _INT64 else str(obj)
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): safe_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [safe_json(v) for v in obj]
    return str(obj)


# orjson writes dataclasses and times its own way; safe_json as text: make orjson refuse them
# too, so that every value is written one way.
STRICT = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def encode_row(row: Any) -> bytes:
    try:
        return orjson.dumps(row, option=STRICT)
    except TypeError:  # an integer (or a type) JSON cannot hold: as text
        return orjson.dumps(safe_json(row))


class Spool(Generic[T]):
    """Items in order, the oldest beyond :data:`MEMORY` kept on disk as JSON lines."""

    __slots__ = ("_count", "_decode", "_encode", "_file", "_memory", "limit")

    def __init__(
        self,
        encode: Callable[[T], Any],
        decode: Callable[[Any], T],
        items: Iterable[T] = (),
        limit: int = MEMORY,
    ) -> None:
        self._encode = encode
        self._decode = decode
        self._memory: list[T] = []
        self._file: IO[bytes] | None = None
        self._count = 0
        self.limit = limit
        self.extend(items)

    def append(self, item: T) -> None:
        self._memory.append(item)
        self._count += 1
        if len(self._memory) >= self.limit:
            self._spill()

    def extend(self, items: Iterable[T]) -> None:
        if isinstance(items, Spool):
            for line in items.lines():
                self.add_line(line)
            return
        for item in items:
            self.append(item)

    def add_line(self, line: bytes) -> None:
        """Add an item as the JSON line :meth:`lines` gave (no decoding on the way)."""
        if self._memory:
            self._spill()
        self._disk().write(line.rstrip(b"\n") + b"\n")
        self._count += 1

    def _disk(self) -> IO[bytes]:
        """The file, positioned at its end (a reader may have left it elsewhere)."""
        if self._file is None:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 (closed with the spool)
        self._file.seek(0, 2)
        return self._file

    def _spill(self) -> None:
        fh = self._disk()
        encode = self._encode
        fh.write(b"".join(encode_row(encode(item)) + b"\n" for item in self._memory))
        self._memory.clear()

    def lines(self) -> Iterator[bytes]:
        """Every item as a JSON line (with its newline), in order."""
        if self._file is not None:
            self._file.flush()
            self._file.seek(0)
            yield from self._file
            self._file.seek(0, 2)
        encode = self._encode
        for item in self._memory:
            yield encode_row(encode(item)) + b"\n"

    def __iter__(self) -> Iterator[T]:
        if self._file is not None:
            decode = self._decode
            self._file.flush()
            self._file.seek(0)
            for line in self._file:
                yield decode(orjson.loads(line))
            self._file.seek(0, 2)
        yield from list(self._memory)

    def sorted(self, key: Callable[[T], Any]) -> Iterator[T]:
        """The items sorted by ``key`` (stable: ties keep their order), in bounded memory: runs
        of :attr:`limit` items are sorted apart, then merged."""
        if self._file is None:
            yield from sorted(self._memory, key=key)
            return
        runs: list[Spool[T]] = []
        chunk: list[T] = []
        for item in self:
            chunk.append(item)
            if len(chunk) >= self.limit:
                runs.append(Spool(self._encode, self._decode, sorted(chunk, key=key), limit=0))
                chunk = []
        runs.append(Spool(self._encode, self._decode, sorted(chunk, key=key), limit=self.limit))
        try:
            yield from heapq.merge(*runs, key=key)
        finally:
            for run in runs:
                run.close()

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> T:
        """The item at ``index`` (negative from the end): direct in memory, read from disk
        otherwise (a scan: for tests and the odd look, not for loops)."""
        n = self._count
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError(f"spool index {index} out of range ({n} items)")
        on_disk = n - len(self._memory)
        if i >= on_disk:
            return self._memory[i - on_disk]
        for j, item in enumerate(self):
            if j == i:
                return item
        raise IndexError(index)  # pragma: no cover (counted above)

    def __eq__(self, other: object) -> bool:
        """Equal to a spool or a list with the same items in the same order."""
        if not isinstance(other, (Spool, list, tuple)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    # A mutable sequence: no hash.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Spool({self._count} items, {len(self._memory)} in memory)"

    def __bool__(self) -> bool:
        return self._count > 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
