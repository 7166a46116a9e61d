"""Loopback HTTP servers for the replay tests: a Tardis-protocol server whose answers a test
scripts (429s, 500s, stalls, slow and cut-off bodies, HTML pages, wrong data), serving the
rest from a capture directory exactly as ``retape serve-archive`` would; and the holed copy of
a real capture those tests repair."""

from __future__ import annotations

import gzip
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
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
    with serving(TardisServer(archive_dir, Script(list(actions or []), default))) as server:
        yield server


S = TypeVar("S", bound=ThreadingHTTPServer)


@contextmanager
def serving(server: S) -> Iterator[S]:
    """``server`` answering on a thread for the block, then shut and closed."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def env_without_key() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RETAPE_TARDIS_API_KEY", None)
    return env


# -- a Binance REST server: trade history by id, weight headers, 429 and 418 ------------------


class BinanceServer(ThreadingHTTPServer):
    """``/api/v3|fapi/v1|dapi/v1 /historicalTrades`` from the trades of a real capture, with
    Binance's weight accounting; it bans (418) whoever asks while a 429 it sent still holds."""

    daemon_threads = True

    def __init__(
        self,
        capture: Path,
        weight: int = 25,
        answer_429: int = 0,
        retry_after: float = 1.0,
        others_used: int = 0,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _BinanceHandler)
        self.rows = _trade_rows(capture)
        self.weight = weight
        self.others_used = others_used  # weight other clients of the same IP used this minute
        self.used: dict[int, int] = {}
        self.answer_429 = answer_429  # how many of the first requests get a 429
        self.retry_after = retry_after
        self.held_until = 0.0
        self.seen: list[tuple[float, dict[str, str]]] = []
        self.banned = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"binance+http://127.0.0.1:{self.server_address[1]}"

    def minutes_seen(self) -> int:
        """How many wall-clock minutes the weighed requests fell in."""
        return len(self.used)


def _trade_rows(capture: Path) -> list[dict[str, Any]]:
    rows = []
    with gzip.open(capture, "rb") as fh:
        for line in fh:
            _, _, raw = line.partition(b" ")
            if b"@trade" not in raw[:40]:
                continue
            d = json.loads(raw)["data"]
            rows.append(
                {
                    "id": d["t"],
                    "price": d["p"],
                    "qty": d["q"],
                    "quoteQty": "0",
                    "time": d["T"],
                    "isBuyerMaker": d["m"],
                    "isBestMatch": True,
                }
            )
    rows.sort(key=lambda r: r["id"])
    return rows


class _BinanceHandler(BaseHTTPRequestHandler):
    server: BinanceServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        s = self.server
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        now = time.monotonic()
        with s.lock:
            s.seen.append((now, q))
            if now < s.held_until:
                s.banned += 1
                self._send(418, b'{"code":-1003,"msg":"banned"}', {"Retry-After": "120"})
                return
            if s.answer_429 > 0:
                s.answer_429 -= 1
                s.held_until = now + s.retry_after
                self._send(
                    429, b'{"code":-1003,"msg":"Too many requests"}', {"Retry-After": f"{s.retry_after:g}"}
                )
                return
            minute = int(time.time() // 60)
            # Other clients of the IP were busy in the first minute only.
            s.used[minute] = s.used.get(minute, 0 if s.used else s.others_used) + s.weight
            used = s.used[minute]
        if not url.path.endswith("/historicalTrades"):
            self._send(404, b'{"code":-1,"msg":"not here"}', {})
            return
        start, limit = int(q["fromId"]), int(q.get("limit", "500"))
        rows = [r for r in s.rows if r["id"] >= start][:limit]
        self._send(200, json.dumps(rows).encode(), {"X-MBX-USED-WEIGHT-1m": str(used)})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def binance_server(capture: Path, **kwargs: Any) -> Iterator[BinanceServer]:
    with serving(BinanceServer(capture, **kwargs)) as server:
        yield server
