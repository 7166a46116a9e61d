"""JSON written piece by piece, so that a report with a million gaps never sits in memory whole.

A value may hold :class:`Items`: a list made on demand, item by item (from a spool), each time
it is read.  :func:`write_json` writes such a value as orjson would write the list it stands
for (the same bytes, indented or compact, keys sorted or not), handing every piece that holds
no :class:`Items` to orjson whole.  Integers beyond 64 bits are written as text (see
:func:`shared.spool.safe_json`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import orjson

from shared.spool import STRICT, safe_json

Write = Callable[[bytes], Any]


class Items:
    """A list made on demand: ``make()`` gives its items afresh each time it is read."""

    __slots__ = ("_count", "_make")

    def __init__(self, make: Callable[[], Iterable[Any]], count: int) -> None:
        self._make = make
        self._count = count

    def __iter__(self) -> Iterator[Any]:
        return iter(self._make())

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"Items({self._count})"


def _lazy(obj: Any) -> bool:
    """Whether ``obj`` holds an :class:`Items` (and so cannot go to orjson whole)."""
    if isinstance(obj, Items):
        return True
    if isinstance(obj, Mapping):
        return any(_lazy(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_lazy(v) for v in obj)
    return False


def materialize(obj: Any) -> Any:
    """``obj`` with every :class:`Items` made into a list (for tests and small reports)."""
    if isinstance(obj, Items):
        return [materialize(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: materialize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [materialize(v) for v in obj]
    return obj


def write_json(write: Write, obj: Any, indent: bool = False, sort_keys: bool = False) -> None:
    """Write ``obj`` through ``write``: the bytes orjson gives for it with OPT_INDENT_2 when
    ``indent``, OPT_SORT_KEYS when ``sort_keys`` (no trailing newline)."""
    option = (orjson.OPT_INDENT_2 if indent else 0) | (orjson.OPT_SORT_KEYS if sort_keys else 0)
    _write(write, obj, 0, indent, sort_keys, option)


def _write(write: Write, obj: Any, level: int, indent: bool, sort_keys: bool, option: int) -> None:
    try:  # most values go to orjson as they are: it refuses Items, big integers and the odd type
        text = orjson.dumps(obj, option=option | STRICT)
    except TypeError:
        text = b""
    if not text and not _lazy(obj):
        text = orjson.dumps(safe_json(obj), option=option)
    if text:
        if indent and level:
            text = text.replace(b"\n", b"\n" + b"  " * level)  # strings hold no raw newline
        write(text)
        return
    if isinstance(obj, Mapping):
        keys = sorted(obj, key=str) if sort_keys else list(obj)
        pairs = ((orjson.dumps(str(k)) + (b": " if indent else b":"), obj[k]) for k in keys)
        _sequence(write, pairs, b"{", b"}", level, indent, sort_keys, option)
    else:
        _sequence(write, ((b"", v) for v in obj), b"[", b"]", level, indent, sort_keys, option)


def _sequence(
    write: Write,
    entries: Iterable[tuple[bytes, Any]],
    opening: bytes,
    closing: bytes,
    level: int,
    indent: bool,
    sort_keys: bool,
    option: int,
) -> None:
    inner = b"\n" + b"  " * (level + 1) if indent else b""
    write(opening)
    empty = True
    for prefix, value in entries:
        write((inner if empty else b"," + inner) + prefix)
        _write(write, value, level + 1, indent, sort_keys, option)
        empty = False
    if not empty and indent:
        write(b"\n" + b"  " * level)
    write(closing)
