"""Loopback HTTP servers for the replay tests: a Tardis-protocol server whose answers a test
scripts (429s, 500s, stalls, slow and cut-off bodies, HTML pages, wrong data), serving the
rest from a capture directory exactly as ``retape serve-archive`` would; and the holed copy of
a real capture those tests repair."""

from __future__ import annotations

import gzip
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from shared.replay.archive import Archive, parse_filters
from shared.replay.request import MINUTE_US
from shared.replay.tardis import parse_from, record_line

DATA = Path(__file__).parent / "data"
USDM = DATA / "hftbacktest" / "usdm" / "btcusdt_20240808.gz"
# Lines of the USD-M capture removed to make the holed copy: a book gap and a trade gap at
# 23:55:41 (receive time), each a few hundred messages long.
HOLE = range(19999, 20400)


def holed_usdm(tmp: Path) -> tuple[Path, Path]:
    """(a directory with the untouched capture, one with its holed copy)."""
    full, holed = tmp / "full", tmp / "holed"
    full.mkdir()
    holed.mkdir()
    (full / USDM.name).write_bytes(USDM.read_bytes())
    with gzip.open(USDM, "rb") as fh:
        lines = fh.readlines()
    with gzip.open(holed / "btcusdt_holed.gz", "wb", compresslevel=1) as out:
        out.writelines(line for n, line in enumerate(lines) if n not in HOLE)
    return full, holed


@dataclass
class Seen:
    at: float  # time.monotonic() when the request arrived
    exchange: str
    minute_us: int
    auth: str | None


# An action answers one request: it gets the handler and the minute's lines the archive has.
Action = Callable[["_Handler", bytes], None]


@dataclass
class Script:
    actions: list[Action] = field(default_factory=list)
    default: Action | None = None  # after the script (None: serve the archive)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self) -> Action | None:
        with self.lock:
            return self.actions.pop(0) if self.actions else self.default


class TardisServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, archive_dir: Path | None, script: Script) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.archive = Archive(str(archive_dir)) if archive_dir is not None else None
        self.script = script
        self.seen: list[Seen] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: TardisServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        exchange = url.path.rsplit("/", 1)[-1]
        q = parse_qs(url.query)
        minute = parse_from(q["from"][0]) + int(q.get("offset", ["0"])[0]) * MINUTE_US
        self.server.seen.append(Seen(time.monotonic(), exchange, minute, self.headers.get("Authorization")))
        lines = b""
        if self.server.archive is not None:
            wanted = parse_filters(exchange, q.get("filters", [""])[0])
            recs = self.server.archive.records(exchange, minute, minute + MINUTE_US, wanted)
            lines = b"".join(record_line(t, raw) for t, raw in recs)
        action = self.server.script.next()
        (action or ok)(self, lines)

    def send(self, status: int, body: bytes, kind: str = "application/x-ndjson", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def ok(h: _Handler, lines: bytes) -> None:
    h.send(200, gzip.compress(lines, mtime=0), Content_Encoding="gzip")


def status(code: int, **headers: str) -> Action:
    def act(h: _Handler, lines: bytes) -> None:
        h.send(code, b'{"code":%d,"message":"scripted"}' % code, "application/json", **headers)

    return act


def stall(seconds: float) -> Action:
    """Answer nothing for ``seconds`` (past the client's read timeout), then the minute."""

    def act(h: _Handler, lines: bytes) -> None:
        time.sleep(seconds)
        ok(h, lines)

    return act


def trickle(chunks: int, every_s: float) -> Action:
    """The minute's body in ``chunks`` pieces, ``every_s`` apart (each read in time, the whole slow)."""

    def act(h: _Handler, lines: bytes) -> None:
        body = gzip.compress(lines, mtime=0)
        h.send_response(200)
        h.send_header("Content-Type", "application/x-ndjson")
        h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        step = max(1, len(body) // chunks)
        for i in range(0, len(body), step):
            h.wfile.write(body[i : i + step])
            h.wfile.flush()
            time.sleep(every_s)

    return act


def truncated(h: _Handler, lines: bytes) -> None:
    """A gzip body cut in the middle, closed cleanly (its length says so: no transport error)."""
    body = gzip.compress(lines, mtime=0)
    h.send(200, body[: len(body) // 2], Content_Encoding="gzip")


def html(h: _Handler, lines: bytes) -> None:
    h.send(200, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")


def rewritten(change: Callable[[bytes], bytes]) -> Action:
    def act(h: _Handler, lines: bytes) -> None:
        ok(h, change(lines))

    return act


def drop_every(n: int) -> Action:
    """The minute with every ``n``-th message left out (a fill that does not bridge)."""
    return rewritten(lambda lines: b"".join(line for i, line in enumerate(lines.splitlines(True)) if i % n))


@contextmanager
def tardis_server(
    archive_dir: Path | None, actions: list[Action] | None = None, default: Action | None = None
) -> Iterator[TardisServer]:
    server = TardisServer(archive_dir, Script(list(actions or []), default))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def env_without_key() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RETAPE_TARDIS_API_KEY", None)
    return env
