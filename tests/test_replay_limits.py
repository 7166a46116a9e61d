"""One limit and one breaker per replay source, shared by every worker process through the real
Redis: eight processes against a loopback server that counts what it receives."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from bench.replay_limit import CountingServer, counting_server, most_in_window, run_workers
from shared.replay.limits import BreakerPolicy, Limit, LocalGate, RedisGate
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.redis


def run(
    server: CountingServer, name: str, procs: int, count: int, rps: float, weight: int = 0, cost: int = 1
) -> None:
    assert run_workers(REDIS_URL, server, name, procs, count, rps, weight, cost) == [0] * procs


def test_eight_processes_share_one_request_limit(redis_client: Any) -> None:
    rps, procs, each = 20, 8, 15
    with counting_server() as server:
        run(server, f"test-{uuid.uuid4().hex}", procs, each, rps)
    arrivals = server.arrivals
    assert len(arrivals) == procs * each
    assert most_in_window(arrivals, 1.0) <= rps
    span = max(arrivals) - min(arrivals)
    used = (len(arrivals) - 1) / span / rps
    assert used >= 0.9, f"the limit was used to {used:.0%} only"


def test_a_weight_budget_per_minute_paces_heavy_requests(redis_client: Any) -> None:
    # 1200 weight a minute at 5 a request: 4 requests a second, whatever the request limit.
    with counting_server() as server:
        run(server, f"test-{uuid.uuid4().hex}", 8, 3, rps=100, weight=1200, cost=5)
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
