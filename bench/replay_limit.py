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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

WORKER = textwrap.dedent(
    """
    import sys, httpx, redis
    sys.path.insert(0, {root!r})
    from shared.replay.limits import Limit, RedisGate
    gate = RedisGate(redis.Redis.from_url({url!r}), {name!r}, Limit({rps}))
    with httpx.Client() as client:
        for _ in range({count}):
            gate.wait_turn()
            client.get({target!r}).raise_for_status()
    """
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    arrivals: list[float]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.arrivals.append(time.monotonic())
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def most_in_window(arrivals: list[float], window: float) -> int:
    times = sorted(arrivals)
    best = lo = 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def measure(url: str, procs: int, rps: float, seconds: float) -> tuple[int, int, float]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.arrivals = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    each = max(1, int(rps * seconds / procs))
    code = WORKER.format(
        root=str(ROOT),
        url=url,
        name=f"bench-{uuid.uuid4().hex}",
        rps=rps,
        count=each,
        target=f"http://127.0.0.1:{server.server_address[1]}/",
    )
    children = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(procs)]
    for child in children:
        child.wait()
    server.shutdown()
    server.server_close()
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
