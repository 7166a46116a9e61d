"""Format changes: the shape of a stream's messages changed under the parser's feet.

A message's *shape* is the set of its fields (paths into the JSON, two levels of objects
deep, lists of levels looked into through their first element) with their JSON types; its
*variant* is what kind of message it is (the values of fields such as ``e``, ``type``,
``action``: a snapshot and an update are allowed to look different).  Per variant, once
:data:`WARM_UP` messages have been seen:

- a field every one of them carried is missing (``missing``; the items of a list, which may
  be empty, are not fields that can go missing);
- a field arrives with a type it never had (``type``: a price sent as a number where it was
  a string, an id as a string);

is one format change, reported once: the field is then taken as optional, the type as
known.  Numbers are one type (int and float), and null goes with anything (a field sent as
null is there, without a value: not another format).  New fields are not a change:
exchanges add fields all the time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared import compiled

WARM_UP = 100
DISCRIMINATORS = ("e", "type", "action", "event", "method", "table", "channel")
_NAMES: dict[type, str] = {
    str: "string",
    int: "number",
    float: "number",
    bool: "bool",
    dict: "object",
    list: "list",
}

Shape = tuple[tuple[str, str], ...]


NULL = "null"


def _type(value: Any) -> str:
    if value is None:
        return NULL
    return _NAMES.get(type(value), type(value).__name__)


def _walk(prefix: str, value: Any, depth: int, out: list[tuple[str, str]], variant: list[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            out.append((path, _type(v)))
            if k in DISCRIMINATORS and isinstance(v, str):
                variant.append(f"{path}={v}")
            if depth < 2 and isinstance(v, (dict, list)):
                _walk(path, v, depth + 1, out, variant)
    elif isinstance(value, list) and value:
        first = value[0]
        if isinstance(first, list):
            # a list of levels: the types of the first level's items
            for i, item in enumerate(first):
                out.append((f"{prefix}[][{i}]", _type(item)))
        elif isinstance(first, dict) and depth < 2:
            _walk(f"{prefix}[]", first, depth + 1, out, variant)
        elif prefix == "":
            # A message that is a list (Bitfinex, Kraken v1): its items by position.  Its kind is
            # its length, its channel id (a leading number) and its words ("book-10", "te").
            variant.append(f"len={len(value)}")
            for i, item in enumerate(value):
                out.append((f"[{i}]", _type(item)))
                if isinstance(item, (dict, list)) and depth < 2:
                    _walk(f"[{i}]", item, depth + 1, out, variant)
                elif isinstance(item, str) or (i == 0 and type(item) is int):
                    variant.append(str(item)[:40])


_CONTAINERS = (dict, list)


def py_fingerprint(obj: Any) -> Any:
    """A cheap, hashable stand-in for a message's shape: equal fingerprints, equal shapes
    (keys in order, value types, nested objects, the first level of a list of levels).
    The reference of the compiled ``_shapes_c.fingerprint``."""
    t = type(obj)
    if t is dict:
        values = obj.values()
        types = tuple(map(type, values))
        if dict in types or list in types:
            return (tuple(obj), types, tuple([py_fingerprint(v) for v in values if type(v) in _CONTAINERS]))
        return (tuple(obj), types)
    if t is list:
        if not obj:
            return ()
        first = obj[0]
        if type(first) is list:
            return tuple(map(type, first))
        if type(first) is dict:
            return py_fingerprint(first)
        return tuple(map(type, obj))
    return t


_COMPILED = compiled.load("shared.checks._shapes_c")
fingerprint: Callable[[Any], Any] = _COMPILED.fingerprint if _COMPILED is not None else py_fingerprint


def shape_of(obj: Any) -> tuple[str, Shape]:
    """The variant and the shape of one decoded message."""
    out: list[tuple[str, str]] = []
    variant: list[str] = []
    _walk("", obj, 0, out, variant)
    return "|".join(variant), tuple(sorted(set(out)))


@dataclass(slots=True)
class _Variant:
    seen: int = 0
    always: set[str] = field(default_factory=set)  # fields every message so far carried
    types: dict[str, set[str]] = field(default_factory=dict)
    last: Shape = ()
    known: set[Shape] = field(default_factory=set)


class ShapeWatch:
    """Per-variant shapes of one source of messages (a file's session).  A message whose
    fingerprint was seen more than :data:`WARM_UP` times is not looked into (its shape can
    bring no change); the others are."""

    __slots__ = ("fingerprints", "variants")

    def __init__(self) -> None:
        self.variants: dict[str, _Variant] = {}
        self.fingerprints: dict[Any, int] = {}

    def check(self, obj: Any) -> dict[str, Any] | None:
        """Record one message; the change it brings (a finding's detail), or None."""
        fp = fingerprint(obj)
        seen = self.fingerprints.get(fp, 0)
        if seen > WARM_UP:
            return None
        if seen or len(self.fingerprints) < 65536:
            self.fingerprints[fp] = seen + 1
        name, shape = shape_of(obj)
        v = self.variants.get(name)
        if v is None:
            v = self.variants[name] = _Variant(always={f for f, _ in shape if "[]" not in f})
        v.seen += 1
        if shape in v.known:
            v.last = shape
            return None
        fields = dict(shape)
        change: dict[str, Any] | None = None
        if v.seen > WARM_UP:
            missing = sorted(v.always - fields.keys())
            retyped = sorted(
                f
                for f, t in fields.items()
                if t != NULL and v.types.get(f, {NULL}) - {NULL} and t not in v.types[f]
            )
            if missing or retyped:
                change = {
                    "variant": name,
                    "missing": missing,
                    "retyped": {f: {"old": sorted(v.types[f]), "new": fields[f]} for f in retyped},
                    "old_shape": dict(v.last),
                    "new_shape": fields,
                }
        v.always &= fields.keys()
        for f, t in fields.items():
            v.types.setdefault(f, set()).add(t)
        v.last = shape
        if len(v.known) < 4096:
            v.known.add(shape)
        return change
