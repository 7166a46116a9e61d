"""The pipeline on the real Redis with real worker processes.

- the same bytes from one process, the embedded broker, a real Redis with 1 worker and
  with 4 workers;
- a worker process killed with SIGKILL mid-job: the job completes, byte-identical;
- Redis stopped and restarted mid-job: a clear failure, and a re-run completes;
- a poison segment: dead-lettered with its reason, the rest of the job completes;
- ``produce`` / ``status``: overlapping producers submit once.

Each test uses its own Redis database (14) or its own redis-server process, emptied after.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DATA = ROOT / "tests" / "data"
INPUTS = [
    str(DATA / "hftbacktest" / "spot"),
    str(DATA / "cryptofeed_deribit"),
    str(DATA / "cryptofeed_ftx"),
    str(DATA / "nautilus"),
]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    return {**env, **extra}


def retape(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=env or _env(),
        timeout=timeout,
    )


def outputs(out: Path) -> dict[str, bytes]:
    """Every file an audit wrote, by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture
def broker(redis_client) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A Redis database of its own (14), emptied before and after."""
    import redis

    base = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    url = base.rsplit("/", 1)[0] + "/14"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The reference: the engine in one process, no broker."""
    out = tmp_path_factory.mktemp("single")
    proc = retape("audit", *INPUTS, "--out", str(out), "--in-process", "--quiet")
    assert proc.returncode == 0, proc.stderr
    return outputs(out)


class Workers:
    """One ``celery worker`` process with prefork children, in its own process group."""

    def __init__(self, url: str, concurrency: int, app: str = "workers.app") -> None:
        env = _env(REDIS_URL=url, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
        cmd = [sys.executable, "-m", "celery", "-A", app, "worker", "--queues", "book,aggregate"]
        cmd += ["--pool", "prefork", "--concurrency", str(concurrency), "--loglevel", "WARNING"]
        cmd += ["--without-gossip", "--without-mingle", "--hostname", f"t{os.getpid()}-{time.time_ns()}@%h"]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )

    def children(self) -> list[int]:
        found = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        )
        return [int(p) for p in found.stdout.split()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _wait_for(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


# -- the same bytes everywhere ---------------------------------------------------------


def test_same_bytes_in_process_embedded_and_real_redis_with_1_and_4_workers(
    broker: str, single: dict[str, bytes], tmp_path: Path
) -> None:
    assert {"report.json", "audit/records.jsonl", "audit/MANIFEST", "metrics.prom"} <= set(single)
    assert any(name.startswith("books/") for name in single)
    runs = {
        "embedded, 2 workers": ["--workers", "2"],
        "real Redis, 1 worker": ["--broker", broker, "--workers", "1"],
        "real Redis, 4 workers": ["--broker", broker, "--workers", "4"],
    }
    for name, options in runs.items():
        out = tmp_path / name.replace(" ", "_").replace(",", "")
        proc = retape("audit", *INPUTS, "--out", str(out), "--no-progress", *options)
        assert proc.returncode == 0, (name, proc.stderr)
        assert outputs(out) == single, name
    import redis

    # Transient keys are gone; the job's state and claim remain, with an expiry.
    client = redis.Redis.from_url(broker)
    left = sorted(k.decode() for k in client.keys("retape:*"))
    assert all(k.startswith(("retape:job:", "retape:claim:")) for k in left), left
    assert all(k.count(":") == 2 for k in left), left
    assert all(client.ttl(k) > 0 for k in left)


# -- a worker killed mid-job -----------------------------------------------------------


def test_a_worker_killed_mid_job_changes_nothing(broker: str, tmp_path: Path) -> None:
    import redis

    sys.path.insert(0, str(ROOT))
    from bench.run import build_capture

    inputs = tmp_path / "in"
    (inputs / "big").mkdir(parents=True)
    build_capture(3, inputs / "big" / "btcusdt_20240808.gz")  # a segment of a few seconds
    shutil.copytree(DATA / "cryptofeed_deribit", inputs / "deribit")
    reference = tmp_path / "reference"
    assert retape("audit", str(inputs), "--out", str(reference), "--in-process", "--quiet").returncode == 0

    client = redis.Redis.from_url(broker)
    workers = Workers(broker, 2)
    try:
        audit = subprocess.Popen(
            [sys.executable, "-m", "producers.cli", "audit", str(inputs), "--out", str(tmp_path / "o")]
            + ["--broker", broker, "--no-progress", "--quiet"],
            cwd=ROOT,
            env=_env(),
            stderr=subprocess.PIPE,
        )

        def big_segment_running() -> bool:
            # a worker is reading a segment's data right now
            return any(True for _ in client.scan_iter(match="retape:job:*:data:*"))

        _wait_for(big_segment_running, 60, "a segment in progress")
        victims = workers.children()
        assert victims
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        _, err = audit.communicate(timeout=180)
        assert audit.returncode == 0, err
    finally:
        workers.stop()
    assert outputs(tmp_path / "o") == outputs(reference)
    letters = client.lrange("retape:dead-letters", 0, -1)
    assert letters == []  # redelivered once, not dead-lettered


# -- Redis stopped and restarted mid-job -----------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_server(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        + ["--dir", str(workdir), "--maxmemory-policy", "noeviction"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    _wait_for(lambda: _pings(client), 10, "redis-server to start")
    return proc


def _pings(client) -> bool:  # type: ignore[no-untyped-def]
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_redis_restarted_mid_job_fails_clearly_and_a_rerun_completes(
    redis_client, single: dict[str, bytes], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    import redis

    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = _redis_server(port, tmp_path)
    workers = Workers(url, 1)
    try:
        client = redis.Redis(port=port)
        audit = subprocess.Popen(
            [sys.executable, "-m", "producers.cli", "audit", *INPUTS, "--out", str(tmp_path / "o")]
            + ["--broker", url, "--no-progress", "--quiet"],
            cwd=ROOT,
            env=_env(),
            stderr=subprocess.PIPE,
            text=True,
        )

        def one_segment_done() -> bool:
            return any(
                int(client.hget(k, "done") or 0) >= 1
                for k in client.scan_iter(match="retape:job:*")
                if k.count(b":") == 2
            )

        _wait_for(one_segment_done, 60, "a first segment")
        server.terminate()
        server.wait(timeout=10)
        server = _redis_server(port, tmp_path)  # back, empty: Redis keeps nothing on disk here
        _, err = audit.communicate(timeout=120)
        assert audit.returncode == 2, err
        assert "retape: error:" in err and "run the same command again" in err and "Traceback" not in err
        # The workers reconnected by themselves; the same command now completes.
        again = retape(
            "audit", *INPUTS, "--out", str(tmp_path / "o"), "--broker", url, "--no-progress", "--quiet"
        )
        assert again.returncode == 0, again.stderr
    finally:
        workers.stop()
        server.terminate()
        server.wait(timeout=10)
    assert outputs(tmp_path / "o") == single


# -- a poison segment ------------------------------------------------------------------


def test_a_poison_segment_is_dead_lettered_and_the_rest_completes(broker: str, tmp_path: Path) -> None:
    import redis

    inputs = tmp_path / "in"
    shutil.copytree(DATA / "cryptofeed_deribit", inputs / "deribit")
    poison = inputs / "bad" / "poison_20240808.gz"
    poison.parent.mkdir()
    shutil.copy(DATA / "hftbacktest" / "spot" / "btcusdt_20240808.gz", poison)
    workers = Workers(broker, 1, app="crashing_worker")
    try:
        proc = retape("audit", str(inputs), "--out", str(tmp_path / "o"), "--broker", broker, "--no-progress")
        assert proc.returncode == 0, proc.stderr
    finally:
        workers.stop()
    client = redis.Redis.from_url(broker)
    letters = [json.loads(raw) for raw in client.lrange("retape:dead-letters", 0, -1)]
    assert len(letters) == 1
    letter = letters[0]
    assert letter["task"] == "retape.audit_segment" and letter["queue"] == "book"
    assert letter["reason"] == "the worker died while running it" and letter["deliveries"] == 3
    report = json.loads((tmp_path / "o" / "report.json").read_bytes())
    bad = [i for i in report["inputs"] if "poison" in os.path.basename(i["path"])]
    assert len(bad) == 1 and bad[0]["error"].startswith("not audited: the worker died")
    # Everything else was audited as it would be without the poison file.
    shutil.rmtree(poison.parent)
    alone = tmp_path / "alone"
    assert retape("audit", str(inputs), "--out", str(alone), "--in-process", "--quiet").returncode == 0
    assert report["streams"] == json.loads((alone / "report.json").read_bytes())["streams"]
    assert "retape_job_dead_letters 1" in (tmp_path / "o" / "metrics.prom").read_text()


# -- produce and status ----------------------------------------------------------------


def test_overlapping_producers_submit_once_and_status_follows_the_job(broker: str, tmp_path: Path) -> None:
    env = _env(REDIS_URL=broker)
    args = ["produce", *INPUTS, "--out", str(tmp_path / "o")]
    workers = Workers(broker, 2)
    try:
        first = subprocess.Popen(
            [sys.executable, "-m", "producers.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert first.stdout is not None
        jid = first.stdout.readline().strip()  # printed at once, before the data is served
        second = retape(*args, env=env)  # cron fires again while the first still runs
        assert second.returncode == 0 and second.stdout.strip() == jid
        assert "nothing new" in second.stderr
        assert first.wait(timeout=180) == 0
        import redis

        from producers.submit import status

        client = redis.Redis.from_url(broker)
        _wait_for(lambda: status(client, jid)["state"] == "done", 60, "the aggregator")
        got = json.loads(retape("status", jid, env=env).stdout)
        assert got["state"] == "done" and got["segments_done"] == got["segments_total"] >= 4
        assert got["dead_letters"] == 0 and got["messages"] > 0
        third = retape(*args, env=env)  # the next cron run: already done
        assert third.stdout.strip() == jid and "already done" in third.stderr
    finally:
        workers.stop()
    assert (tmp_path / "o" / "report.json").exists()
    no_broker = retape("produce", INPUTS[0], "--out", str(tmp_path))
    assert no_broker.returncode == 2 and "no broker" in no_broker.stderr
