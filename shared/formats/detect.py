"""Recognise a capture's format from its first lines, not its name."""

from __future__ import annotations

import re

import orjson

from shared.formats.lines import head_lines

TARDIS_CSV_HEAD = b"exchange,symbol,timestamp,local_timestamp"

_CRYPTOFEED = (
    re.compile(rb"^\S+ <-> [0-9]+(\.[0-9]*)?$"),
    re.compile(rb"^\S+ (<-|->) [0-9]+(\.[0-9]*)?: "),
    re.compile(rb"^configuration: [\[{]"),
    re.compile(rb"^[0-9]{9,11}\.[0-9]*: [\[{]"),
)
_EPOCH = re.compile(rb"^[0-9]{9,19} [\[{]")
_TARDIS_RAW = re.compile(rb"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z [\[{]")
_JSON = re.compile(rb"^\s*[\[{]")


def detect(path: str) -> str | None:
    """``tardis-csv``, ``cryptofeed``, ``epoch``, ``tardis-raw``, ``jsonl``, ``empty``, or None."""
    lines = [line for line in head_lines(path, 32) if line.strip()]
    if not lines:
        return "empty"
    if _binary(lines):
        return None
    first = lines[0]
    if first.startswith(TARDIS_CSV_HEAD):
        return "tardis-csv"
    votes: dict[str, int] = {}
    for line in lines[:16]:
        kind = None
        if any(p.match(line) for p in _CRYPTOFEED):
            kind = "cryptofeed"
        elif _EPOCH.match(line):
            kind = "epoch"
        elif _TARDIS_RAW.match(line):
            kind = "tardis-raw"
        elif _JSON.match(line):
            kind = "jsonl"
        if kind is not None:
            votes[kind] = votes.get(kind, 0) + 1
    if not votes:
        return None
    # cryptofeed files start with a URL header that settles it.
    if "cryptofeed" in votes and (_CRYPTOFEED[0].match(first) or _CRYPTOFEED[2].match(first)):
        return "cryptofeed"
    best = max(sorted(votes), key=lambda k: votes[k])
    if 2 * votes[best] < min(len(lines), 16) and not _first_matches(best, first):
        return None  # a stray line that looks like JSON among text that does not
    if best == "jsonl" and not _parses(first):
        # One pretty-printed JSON document starts with its opening bracket.
        return "json-doc" if first.strip() in (b"{", b"[") or _JSON.match(first) else None
    return best


def _binary(lines: list[bytes]) -> bool:
    """More than 1 % of the head is neither printable ASCII nor valid UTF-8 text."""
    blob = b"\n".join(lines)[:65536]
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the head is still text.
        if exc.start < len(blob) - 4:
            return True
        text = blob[: exc.start].decode("utf-8")
    odd = sum(1 for ch in text if ch < " " and ch not in "\t\r\n")
    return odd * 100 > max(len(text), 1)


def _first_matches(kind: str, first: bytes) -> bool:
    pattern = {"epoch": _EPOCH, "tardis-raw": _TARDIS_RAW, "jsonl": _JSON}.get(kind)
    if pattern is not None:
        return bool(pattern.match(first))
    return any(p.match(first) for p in _CRYPTOFEED)


def _parses(line: bytes) -> bool:
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True
