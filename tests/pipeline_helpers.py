"""Helpers for the pipeline tests: running the command, brokers, workers, process trees."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DATA = ROOT / "tests" / "data"
PYTHONPATH = os.pathsep.join([str(ROOT), str(ROOT / "tests")])


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def env(**extra: str) -> dict[str, str]:
    """The environment of a command: no REDIS_URL unless given, the tests' modules importable."""
    base = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    return {**base, "PYTHONPATH": PYTHONPATH, **extra}


def retape(
    *args: str, environ: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=environ or env(),
        timeout=timeout,
    )


def start_retape(*args: str, environ: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The command in a session of its own, as a shell runs a foreground job."""
    return subprocess.Popen(
        [sys.executable, "-m", "producers.cli", *args],
        cwd=ROOT,
        env=environ or env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def outputs(out: Path) -> dict[str, bytes]:
    """Every file an audit wrote, by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def wait_for(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pings(client) -> bool:  # type: ignore[no-untyped-def]
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def server_process(binary: str, port: int, workdir: Path, password: str | None) -> subprocess.Popen[bytes]:
    """A Redis-compatible server on ``port`` (config on stdin), up and answering."""
    import redis

    config = [
        "bind 127.0.0.1",
        f"port {port}",
        'save ""',
        "appendonly no",
        f"dir {workdir}",
        "maxmemory-policy noeviction",
    ]
    if password:
        config.append(f"requirepass {password}")
    proc = subprocess.Popen(
        [binary, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    assert proc.stdin is not None
    proc.stdin.write(("\n".join(config) + "\n").encode())
    proc.stdin.close()
    client = redis.Redis(port=port, password=password)
    wait_for(lambda: pings(client), 10, f"{binary} to start")
    return proc


def redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        if in_ci():
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    return binary


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children...)."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as fh:
                    parents[int(name)] = int(fh.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == current]
        found += kids
        frontier += kids
    return sorted(found)


def gone(pid: int) -> bool:
    """No such process, or only its zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except FileNotFoundError:
        return True


def alive(pids: list[int]) -> list[int]:
    return [p for p in pids if not gone(p)]
