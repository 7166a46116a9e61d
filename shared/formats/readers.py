"""Line-based capture formats, each read as a stream of :class:`RawRecord`.

- ``epoch``: hftbacktest-style ``<epoch ns> <JSON>`` (any epoch unit is accepted);
- ``cryptofeed``: ``<ws url> <-> <ts>`` header, ``<url> <- <ts>: <sent>``,
  ``<url> -> <ts>: <REST body>``, ``<ts>: <received>`` and ``configuration:`` lines;
- ``tardis-raw``: ``<ISO-8601> <JSON>``, an empty line for a disconnect;
- ``jsonl``: exchange-native JSON, one message per line, no local time.

Every line becomes exactly one record (``malformed`` when it cannot be read), so the
counts of lines, records and malformed lines always add up.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from shared.formats.lines import LINE_TOO_LONG, TruncatedInput, iter_lines
from shared.formats.timestamps import epoch_text_to_us, iso_to_us
from shared.model import RawRecord

_CF_URL_LINE = re.compile(rb"^(\S+) (<->|<-|->) ([0-9]+(?:\.[0-9]*)?)(?:: (.*))?$", re.S)


def _malformed(path: str, n: int, why: str) -> RawRecord:
    return RawRecord(path, n, None, "malformed", error=why)


def _blank(path: str, n: int) -> RawRecord:
    return RawRecord(path, n, None, "blank")


def too_long(path: str, n: int) -> RawRecord:
    return _malformed(path, n, "line longer than the reader's limit")


def _numbered(path: str) -> Iterator[tuple[int, bytes] | RawRecord]:
    """Numbered lines; an over-long line or a cut-off gzip comes as a malformed record."""
    n = 0
    try:
        for line in iter_lines(path):
            n += 1
            if line is LINE_TOO_LONG:
                yield too_long(path, n)
            else:
                yield n, line
    except TruncatedInput as exc:
        yield RawRecord.cut_off(path, n + 1, str(exc))


def epoch_record(path: str, n: int, line: bytes) -> RawRecord:
    """Line ``n`` of an ``epoch`` capture."""
    ts, _, raw = line.partition(b" ")
    if not raw:
        return _malformed(path, n, "epoch time without a message") if line.strip() else _blank(path, n)
    try:
        local = epoch_text_to_us(ts)
    except ValueError:
        return _malformed(path, n, "line does not start with an epoch time")
    return RawRecord(path, n, local, "json", raw)


def tardis_raw_record(path: str, n: int, line: bytes) -> RawRecord:
    """Line ``n`` of a ``tardis-raw`` capture."""
    if not line.strip():
        return RawRecord(path, n, None, "disconnect")
    ts, _, raw = line.partition(b" ")
    try:
        local = iso_to_us(ts)
    except ValueError:
        return _malformed(path, n, "line does not start with an ISO-8601 UTC time")
    if not raw:
        return _malformed(path, n, "timestamp without a message")
    return RawRecord(path, n, local, "json", raw)


def _per_line(path: str, record: Callable[[str, int, bytes], RawRecord]) -> Iterator[RawRecord]:
    for item in _numbered(path):
        if type(item) is RawRecord:
            yield item
        else:
            n, line = item  # type: ignore[misc]
            yield record(path, n, line)


def read_epoch(path: str) -> Iterator[RawRecord]:
    return _per_line(path, epoch_record)


def read_tardis_raw(path: str) -> Iterator[RawRecord]:
    return _per_line(path, tardis_raw_record)


def read_jsonl(path: str) -> Iterator[RawRecord]:
    for item in _numbered(path):
        if type(item) is RawRecord:
            yield item
            continue
        n, line = item  # type: ignore[misc]
        yield RawRecord(path, n, None, "json", line) if line.strip() else _blank(path, n)


def read_cryptofeed(path: str) -> Iterator[RawRecord]:
    url: str | None = None
    connected = False
    for item in _numbered(path):
        if type(item) is RawRecord:
            yield item
            continue
        n, line = item  # type: ignore[misc]
        if not line.strip():
            yield _blank(path, n)
            continue
        if line[:1].isdigit():
            ts, sep, raw = line.partition(b": ")
            try:
                local = epoch_text_to_us(ts)
            except ValueError:
                yield _malformed(path, n, "received line does not start with an epoch time")
                continue
            if not sep:
                yield _malformed(path, n, "received line without a message")
                continue
            yield RawRecord(path, n, local, "json", raw, url=url)
            continue
        if line.startswith(b"configuration: "):
            yield RawRecord(path, n, None, "config")
            continue
        m = _CF_URL_LINE.match(line)
        if m is None:
            yield _malformed(path, n, "not a cryptofeed capture line")
            continue
        line_url = m.group(1).decode("utf-8", "replace")
        arrow = m.group(2)
        local = epoch_text_to_us(m.group(3))
        if arrow == b"<->":
            # A second connection in one file: what came before is cut off.
            yield RawRecord(path, n, local, "disconnect" if connected else "connect", url=line_url)
            connected = True
            url = line_url
        elif arrow == b"<-":
            yield RawRecord(path, n, local, "sent", url=line_url)
        else:
            body = m.group(4)
            if body is None:
                yield _malformed(path, n, "REST line without a body")
            else:
                yield RawRecord(path, n, local, "json", body, url=line_url)


JSON_DOC_LIMIT = 64 << 20


def read_json_doc(path: str) -> Iterator[RawRecord]:
    """A single (pretty-printed) JSON document, such as a saved REST answer."""
    from shared.formats.lines import open_binary

    try:
        with open_binary(path) as fh:
            body = fh.read(JSON_DOC_LIMIT + 1)
    except (EOFError, OSError) as exc:
        yield _malformed(path, 1, f"cannot read the document ({exc})")
        return
    if len(body) > JSON_DOC_LIMIT:
        yield _malformed(path, 1, "JSON document larger than 64 MiB; write it as JSON lines")
        return
    yield RawRecord(path, 1, None, "json", body)


from shared.formats.tardis_csv import read_tardis_csv  # noqa: E402

READERS = {
    "json-doc": read_json_doc,
    "epoch": read_epoch,
    "cryptofeed": read_cryptofeed,
    "tardis-raw": read_tardis_raw,
    "jsonl": read_jsonl,
    "tardis-csv": read_tardis_csv,
}
