"""The Tardis-compatible HTTP API: ``GET {base}/v1/data-feeds/{exchange}?from=&offset=&filters=``.

Each answer is one minute of gzip-compressed NDJSON: ``<ISO-8601 receive time> <exchange JSON>``
per line, an empty line for a recorder disconnect.  This module holds both sides of that
protocol's text (what a line looks like, how a minute is named) and the client; the server
is ``retape serve-archive`` (:mod:`producers.archive_server`).
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Iterator
from functools import partial
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from shared.errors import UpstreamTimeout, UpstreamUnavailable
from shared.formats.lines import GZIP_MAGIC
from shared.formats.timestamps import iso_to_us, us_to_iso
from shared.replay.cache import MINUTES
from shared.replay.channels import tardis_channels, tardis_symbol
from shared.replay.fill import Record
from shared.replay.limits import Gate
from shared.replay.request import MINUTE_US, FillRequest
from shared.replay.retry import (
    Attempts,
    BadAnswer,
    NoData,
    RetryPolicy,
    call,
    raise_if_transient,
    refused,
    upstream,
)

DAY_US = 86_400_000_000
API_KEY_ENV = "RETAPE_TARDIS_API_KEY"
READ_TIMEOUT_S = 30.0
LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=4)


def record_line(local_us: int | None, raw: bytes | None) -> bytes:
    """One line of an answer: a message, or an empty line for a disconnect."""
    if raw is None or local_us is None:
        return b"\n"
    return us_to_iso(local_us).encode() + b" " + raw + b"\n"


def minute_query(minute_us: int) -> tuple[str, int]:
    """``from`` (the UTC day) and ``offset`` (minutes into it) naming one minute."""
    day = minute_us - minute_us % DAY_US
    return us_to_iso(day)[:10], (minute_us - day) // MINUTE_US


def parse_from(text: str) -> int:
    """A ``from`` value (``2024-08-08`` or a full ISO-8601 UTC time) as epoch µs."""
    text = text.strip()
    if len(text) == 10:
        text += "T00:00:00Z"
    elif not text.endswith(("Z", "z")):
        text += "Z"
    return iso_to_us(text.encode())


def public_name(url: str) -> str:
    """A source URL as reports show it: no user, password, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


class TardisSource:
    """Fills from a Tardis-compatible API (api.tardis.dev, or ``retape serve-archive``)."""

    def __init__(
        self,
        base_url: str,
        gate: Gate,
        policy: RetryPolicy,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        self.name = public_name(base_url)
        # A read that waits longer than this fails (and is tried again); so does a whole answer
        # that takes four times as long (a body trickling in).
        self.deadline_s = 4 * read_timeout_s
        self.gate = gate
        self.policy = policy
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        headers = {"Accept-Encoding": "gzip"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self.client = httpx.Client(
            base_url=public_name(base_url),
            headers=headers,
            timeout=httpx.Timeout(connect=5.0, read=read_timeout_s, write=10.0, pool=30.0),
            limits=LIMITS,
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self.client.close()

    def records(self, req: FillRequest, attempts: Attempts) -> Iterator[Record]:
        key = req.key
        channels = tardis_channels(key.exchange, key.channel, req.series)
        if not channels:
            raise NoData(f"no Tardis channel carries {key.exchange} {key.channel}")
        minutes = req.minutes()
        if not minutes:
            raise NoData("the gap spans more than an hour: not asked for")
        symbol = tardis_symbol(key.exchange, key.symbol)
        filters = orjson.dumps([{"channel": c, "symbols": [symbol]} for c in channels]).decode()
        for minute in minutes:
            one = partial(self._minute, key.exchange, minute, filters)
            ask = partial(call, self.gate, self.policy, one, attempts)
            yield from MINUTES.get((self.name, key.exchange, minute, filters), ask)

    def _minute(self, exchange: str, minute_us: int, filters: str) -> list[Record]:
        day, offset = minute_query(minute_us)
        params = {"from": day, "offset": str(offset), "filters": filters}
        started = time.monotonic()
        with (
            upstream(self.name),
            self.client.stream("GET", f"/v1/data-feeds/{exchange}", params=params) as response,
        ):
            self._check(response)
            return _read_minute(response, started, self.deadline_s)

    def _check(self, response: httpx.Response) -> None:
        status = response.status_code
        if status == 200:
            kind = response.headers.get("content-type", "")
            if "html" in kind:
                raise BadAnswer(f"{self.name} answered an HTML page, not NDJSON")
            return
        if status in (401, 403):
            raise refused(self.name, status, API_KEY_ENV, bool(self.api_key))
        if status == 404:
            raise NoData(f"{self.name} has no such data (HTTP 404)")
        raise_if_transient(response, self.name)
        raise BadAnswer(f"{self.name} answered HTTP {status}")


def _read_minute(response: httpx.Response, started: float, deadline_s: float) -> list[Record]:
    """The records of one answer, read as it streams in: gunzipped when gzip (whatever the
    headers say), each line checked; a truncated gzip stream is a transient failure."""
    records: list[Record] = []
    inflate: zlib._Decompress | None = None
    pending = b""
    first = True
    line_no = 0

    def lines_of(text: bytes) -> None:
        nonlocal pending, line_no
        *whole, pending = (pending + text).split(b"\n")
        for line in whole:
            line_no += 1
            records.append(_record(line, line_no))

    for chunk in response.iter_raw():
        if time.monotonic() - started > deadline_s:
            raise UpstreamTimeout(f"an answer took more than {deadline_s:g} s")
        if first and chunk:
            first = False
            if chunk[:2] == GZIP_MAGIC:
                inflate = zlib.decompressobj(wbits=31)
            elif response.headers.get("content-encoding", "").lower() not in ("", "identity"):
                raise BadAnswer(f"body encoded as {response.headers['content-encoding']!r}, not gzip")
        if inflate is not None:
            try:
                text = inflate.decompress(chunk)
            except zlib.error as exc:
                raise UpstreamUnavailable(f"corrupt gzip body ({exc})") from None
            lines_of(text)
        else:
            lines_of(chunk)
    if inflate is not None and not inflate.eof:
        raise UpstreamUnavailable("the gzip body was cut off")
    if pending:
        line_no += 1
        records.append(_record(pending, line_no))
    return records


def _record(line: bytes, line_no: int) -> Record:
    if not line.strip():
        return None, None
    ts, _, raw = line.partition(b" ")
    try:
        local = iso_to_us(ts)
    except ValueError:
        raise BadAnswer(f"line {line_no} is not '<ISO-8601 time> <message>': {line[:60]!r}") from None
    if not raw:
        raise BadAnswer(f"line {line_no} has a time but no message")
    return local, raw
