"""One limit and one breaker per replay source, shared by every worker process through the real
Redis: eight processes against a loopback server that counts what it receives."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shared.replay.limits import BreakerPolicy, Limit, LocalGate, RedisGate
from tests.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.redis


class CountingServer(ThreadingHTTPServer):
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


def run_workers(
    server: CountingServer, name: str, procs: int, count: int, rps: float, weight: int = 0, cost: int = 1
) -> None:
    target = f"http://127.0.0.1:{server.server_address[1]}/"
    code = WORKER.format(
        root=str(ROOT),
        url=REDIS_URL,
        name=name,
        rps=rps,
        weight=weight,
        count=count,
        cost=cost,
        target=target,
    )
    children = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(procs)]
    for child in children:
        assert child.wait(120) == 0


def most_in_window(arrivals: list[float], window: float) -> int:
    times = sorted(arrivals)
    best = lo = 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def test_eight_processes_share_one_request_limit(redis_client: Any) -> None:
    rps, procs, each = 20, 8, 15
    with counting_server() as server:
        run_workers(server, f"test-{uuid.uuid4().hex}", procs, each, rps)
    arrivals = server.arrivals
    assert len(arrivals) == procs * each
    assert most_in_window(arrivals, 1.0) <= rps
    span = max(arrivals) - min(arrivals)
    used = (len(arrivals) - 1) / span / rps
    assert used >= 0.9, f"the limit was used to {used:.0%} only"


def test_a_weight_budget_per_minute_paces_heavy_requests(redis_client: Any) -> None:
    # 1200 weight a minute at 5 a request: 4 requests a second, whatever the request limit.
    with counting_server() as server:
        run_workers(server, f"test-{uuid.uuid4().hex}", 8, 3, rps=100, weight=1200, cost=5)
    arrivals = server.arrivals
    assert most_in_window(arrivals, 1.0) <= 4
    assert most_in_window(arrivals, 5.0) <= 20
    assert (len(arrivals) - 1) / (max(arrivals) - min(arrivals)) >= 0.9 * 4


def test_retry_after_holds_every_worker_off(redis_client: Any) -> None:
    name = f"test-{uuid.uuid4().hex}"
    a = RedisGate(redis_client, name, Limit(100))
    b = RedisGate(redis_client, name, Limit(100))
    a.hold_off(1.0)
    started = time.monotonic()
    b.wait_turn()
    assert time.monotonic() - started >= 0.95


def test_a_hold_set_while_waiting_for_a_slot_still_comes_first(redis_client: Any) -> None:
    name = f"test-{uuid.uuid4().hex}"
    slow = RedisGate(redis_client, name, Limit(2))  # one request every ~0.53 s
    other = RedisGate(redis_client, name, Limit(2))
    slow.wait_turn()  # takes the first slot; the next one is ~0.53 s away

    def hold_soon() -> None:
        time.sleep(0.2)
        other.hold_off(1.5)  # a 429 seen by another worker while this one waits for its slot

    threading.Thread(target=hold_soon).start()
    started = time.monotonic()
    slow.wait_turn()
    assert time.monotonic() - started >= 0.2 + 1.5 - 0.05


def test_the_breaker_opens_after_repeated_failures_and_half_opens(redis_client: Any) -> None:
    name = f"test-{uuid.uuid4().hex}"
    policy = BreakerPolicy(threshold=3, cooldown_s=0.5)
    one = RedisGate(redis_client, name, Limit(100), policy)
    other = RedisGate(redis_client, name, Limit(100), policy)
    assert not one.failed("HTTP 500") and not other.failed("HTTP 502")
    assert other.failed("HTTP 503")  # the third failure, whoever saw it, opens it for everyone
    assert one.open_reason() == other.open_reason() == "HTTP 503"
    time.sleep(0.6)
    assert one.open_reason() is None  # half open: one try may go
    assert one.failed("timed out")  # and its failure opens it again at once
    assert other.open_reason() == "timed out"
    time.sleep(0.6)
    one.succeeded()
    assert not other.failed("HTTP 500") and other.open_reason() is None


def test_the_in_process_gate_behaves_the_same() -> None:
    clock = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock[0] += s

    gate = LocalGate("x", Limit(10), BreakerPolicy(2, 5.0), clock=lambda: clock[0], sleep=sleep)
    for _ in range(5):
        gate.wait_turn()
    assert clock[0] == pytest.approx(4 / (10 * 0.95), abs=1e-5)
    gate.hold_off(2.0)
    before = clock[0]
    gate.wait_turn()
    assert clock[0] - before >= 2.0
    assert not gate.failed("a") and gate.failed("b") and gate.open_reason() == "b"
    clock[0] += 5.1
    assert gate.open_reason() is None and gate.failed("c")
