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
    if best == "jsonl" and not _parses(first):
        return "json-doc"  # one pretty-printed JSON document
    return best


def _parses(line: bytes) -> bool:
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True
