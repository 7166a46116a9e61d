"""Reading fragment files: every record one :class:`Fragment`, nothing dropped silently.

- CSV (any delimiter the sniffer finds), the header naming the columns (:mod:`.schemas`);
- JSON: a list of records, an API answer (``{"success": true, "result": [...]}``), or one record;
- JSON lines: records, or API request/response logs (``{"request": {"path": "/fills"},
  "response": {"result": [...]}}``: the path says what the records are);
- anything else that is text: free-text notes, one fragment per paragraph.

A fragment's account is its ``account`` field when it has one, else the name of the directory
holding its file.  A record that cannot be read is a :class:`Problem` naming file and line.
Pure: the caller opens nothing; :func:`read_fragments` takes a path and reads only it.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.ledger.schemas import Kind, canonical, kind_of

MAX_NOTE_CHARS = 4000


@dataclass(slots=True)
class Fragment:
    id: str  # "<file name>:<line>[:<n>]", what provenance cites
    account: str
    path: str
    line: int
    kind: Kind | None  # None: a free-text note
    fields: dict[str, Any] = field(default_factory=dict)  # canonical names, values as written
    text: str | None = None  # a note's text (quoted data, never instructions)
    hint: str = ""  # file or endpoint name that told deposit from withdrawal


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    line: int
    reason: str


def account_of(path: str, fields: dict[str, Any]) -> str:
    value = fields.get("account")
    if isinstance(value, str) and value.strip():
        return value.strip()
    return os.path.basename(os.path.dirname(os.path.abspath(path))) or "unknown"


def read_fragments(path: str, data: bytes, name: str | None = None) -> tuple[list[Fragment], list[Problem]]:
    """The fragments of one file (``data`` is its content) and the records that could not be
    read.  ``name`` (default: the file's name) starts every fragment id: give the path relative
    to the inputs' root, so that ids are unique across account directories."""
    name = name or os.path.basename(path)
    if b"\x00" in data[:65536] or data[:2] == b"\x1f\x8b":
        return [], [Problem(path, 1, "a binary (or compressed) file, not a fragment: not read")]
    text = data.decode("utf-8-sig", errors="replace")
    if text.count("\ufffd") > max(16, len(text) // 100):
        return [], [Problem(path, 1, "not UTF-8 text: not read")]
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return _json_lines(path, name, text)
        if isinstance(doc, dict) and isinstance(doc.get("response"), (dict, list)):
            return _json_lines(path, name, text)  # an API log of one request
        return _records(path, name, 1, _rows_of(doc), name)
    if _looks_like_csv(text):
        return _csv(path, name, text)
    return _notes(path, name, text), []


def _rows_of(doc: Any) -> list[Any]:
    if isinstance(doc, dict) and isinstance(doc.get("result"), list):
        return list(doc["result"])
    if isinstance(doc, list):
        return doc
    return [doc]


def _records(
    path: str, name: str, line: int, rows: list[Any], hint: str
) -> tuple[list[Fragment], list[Problem]]:
    fragments: list[Fragment] = []
    problems: list[Problem] = []
    for n, row in enumerate(rows):
        ident = f"{name}:{line}" if len(rows) == 1 else f"{name}:{line}:{n}"
        if not isinstance(row, dict):
            problems.append(Problem(path, line, f"record {n} is not an object"))
            continue
        fields = canonical(row)
        kind = kind_of(fields, hint)
        if kind is None:
            problems.append(Problem(path, line, f"record {n}: no known kind for columns {sorted(row)[:8]}"))
            continue
        fragments.append(Fragment(ident, account_of(path, fields), path, line, kind, fields, hint=hint))
    return fragments, problems


def _json_lines(path: str, name: str, text: str) -> tuple[list[Fragment], list[Problem]]:
    fragments: list[Fragment] = []
    problems: list[Problem] = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            problems.append(Problem(path, line_no, f"invalid JSON: {exc}"))
            continue
        hint = name
        rows: list[Any]
        if isinstance(obj, dict) and isinstance(obj.get("response"), (dict, list)):
            request = obj.get("request")
            endpoint = request.get("path") or request.get("url") if isinstance(request, dict) else None
            hint = str(endpoint or name)
            rows = _rows_of(obj["response"])
        else:
            rows = _rows_of(obj)
        got, bad = _records(path, name, line_no, rows, hint)
        fragments += got
        problems += bad
    return fragments, problems


def _looks_like_csv(text: str) -> bool:
    head = text.splitlines()[:1]
    if not head:
        return False
    first = head[0]
    return any(d in first for d in (",", ";", "\t")) and not first.rstrip().endswith((".", "!", "?"))


def _csv(path: str, name: str, text: str) -> tuple[list[Fragment], list[Problem]]:
    sample = text[:8192]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    fragments: list[Fragment] = []
    problems: list[Problem] = []
    header: list[str] | None = None
    for row in reader:
        line_no = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = row
            continue
        if len(row) != len(header):
            problems.append(Problem(path, line_no, f"{len(row)} cells under a header of {len(header)}"))
            continue
        got, bad = _records(path, name, line_no, [dict(zip(header, row, strict=True))], name)
        fragments += got
        problems += bad
    return fragments, problems


def _notes(path: str, name: str, text: str) -> list[Fragment]:
    """Free text, one fragment per paragraph (blank-line separated)."""
    fragments = []
    line_no = 1
    start = 1
    buf: list[str] = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if line.strip():
            if not buf:
                start = line_no
            buf.append(line.strip())
            continue
        if buf:
            fragments.append(_note(path, name, start, " ".join(buf)))
            buf = []
    if buf:
        fragments.append(_note(path, name, start, " ".join(buf)))
    return fragments


def _note(path: str, name: str, line: int, text: str) -> Fragment:
    return Fragment(f"{name}:{line}", account_of(path, {}), path, line, None, {}, text[:MAX_NOTE_CHARS])
