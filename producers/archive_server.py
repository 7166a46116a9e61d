"""``retape serve-archive DIR``: captures on this machine behind the Tardis-compatible API.

``GET /v1/data-feeds/{exchange}?from=<day or ISO time>&offset=<minutes>&filters=<JSON>``
answers the minute ``from + offset`` as gzip NDJSON (``<ISO-8601 receive time> <raw JSON>``,
an empty line for a disconnect), read from the archive by :mod:`shared.replay.archive`.
Errors answer JSON ``{"code", "message"}`` with 400 (a bad query) or 404 (another path).
"""

from __future__ import annotations

import gzip
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from shared.replay.archive import Archive, parse_filters
from shared.replay.request import MINUTE_US
from shared.replay.tardis import parse_from, record_line


class ArchiveServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, archive: Archive, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.archive = archive


class _Handler(BaseHTTPRequestHandler):
    server: ArchiveServer
    server_version = "retape-serve-archive"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 3 or parts[:2] != ["v1", "data-feeds"] or not parts[2]:
            self._error(404, "not found: the API is GET /v1/data-feeds/{exchange}")
            return
        exchange = parts[2]
        query = parse_qs(url.query)
        try:
            start = parse_from(query["from"][0]) + int(query.get("offset", ["0"])[0]) * MINUTE_US
            wanted = parse_filters(exchange, query.get("filters", [""])[0])
        except KeyError:
            self._error(400, "from is required")
            return
        except ValueError as exc:
            self._error(400, f"bad query: {exc}")
            return
        lines = b"".join(
            record_line(local, raw)
            for local, raw in self.server.archive.records(exchange, start, start + MINUTE_US, wanted)
        )
        body = gzip.compress(lines, compresslevel=5, mtime=0)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        body = orjson.dumps({"code": status, "message": message})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown the terminal; errors are answered, not logged


def serve(directory: str, host: str, port: int) -> int:
    archive = Archive(directory)
    files = archive.files()
    server = ArchiveServer(archive, (host, port))
    bound_host, bound_port = server.server_address[:2]
    exchanges = sorted({e for f in files for e in f.exchanges})
    print(
        f"serving {len(files)} capture(s) of {', '.join(exchanges) or 'no exchange'} from {directory} "
        f"on http://{bound_host!s}:{bound_port}/v1/data-feeds/{{exchange}}",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print("stopped", file=sys.stderr)
    return 0
