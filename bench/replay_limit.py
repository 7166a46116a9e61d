"""Benchmark: eight worker processes sharing one replay source's limit through Redis.

Each process asks the shared gate (:class:`shared.replay.limits.RedisGate`) before every
request to a loopback server that counts arrivals.  Printed: the most requests the server saw
in any one-second window against the limit (must not pass it), and how much of the limit was
used while work was queued (target: at least 90 %).  Redis: ``REDIS_URL`` when set, else an
embedded valkey-server, as ``retape audit`` starts one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

WORKER = textwrap.dedent(
    """
    import sys, httpx, redis
    sys.path.insert(0, {root!r})
    from shared.replay.limits import Limit, RedisGate
    gate = RedisGate(redis.Redis.from_url({url!r}), {name!r}, Limit({rps}, {weight}))
    with httpx.Client() as client:
        for _ in range({count}):
            gate.wait_turn({cost})
            client.get({target!r}).raise_for_status()
    """
)


class CountingServer(ThreadingHTTPServer):
    """A loopback server that notes when each request arrives."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Counting)
        self.arrivals: list[float] = []
        self.lock = threading.Lock()


class _Counting(BaseHTTPRequestHandler):
    server: CountingServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.arrivals.append(time.monotonic())
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def counting_server() -> Iterator[CountingServer]:
    server = CountingServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def run_workers(
    url: str,
    server: CountingServer,
    name: str,
    procs: int,
    count: int,
    rps: float,
    weight: int = 0,
    cost: int = 1,
) -> list[int]:
    """``procs`` processes, each asking the shared gate ``name`` (in the Redis at ``url``) before
    each of its ``count`` requests to ``server``; their exit statuses."""
    code = WORKER.format(
        root=str(ROOT),
        url=url,
        name=name,
        rps=rps,
        weight=weight,
        count=count,
        cost=cost,
        target=f"http://127.0.0.1:{server.server_address[1]}/",
    )
    children = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(procs)]
    return [child.wait(600) for child in children]


def most_in_window(arrivals: list[float], window: float) -> int:
    """The most arrivals in any half-open window of ``window`` seconds."""
    times = sorted(arrivals)
    best = lo = 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def measure(url: str, procs: int, rps: float, seconds: float) -> tuple[int, int, float]:
    with counting_server() as server:
        run_workers(url, server, f"bench-{uuid.uuid4().hex}", procs, max(1, int(rps * seconds / procs)), rps)
    arrivals = server.arrivals
    used = (len(arrivals) - 1) / (max(arrivals) - min(arrivals)) / rps
    return len(arrivals), most_in_window(arrivals, 1.0), used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--rps", type=float, default=25.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    url = os.environ.get("REDIS_URL")
    if url:
        n, most, used = measure(url, args.procs, args.rps, args.seconds)
    else:
        from producers.local import EmbeddedBroker

        with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(tmp) as broker:
            n, most, used = measure(broker.url, args.procs, args.rps, args.seconds)
    print(
        f"replay limit: {args.procs} processes, limit {args.rps:g} requests/s, {n} requests: "
        f"at most {most} in any 1 s window ({'within' if most <= args.rps else 'OVER'} the limit); "
        f"limit used {used:.1%} while work was queued (target >= 90%)"
    )


if __name__ == "__main__":
    main()
