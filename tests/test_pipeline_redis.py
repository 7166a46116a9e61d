"""The pipeline on the real Redis with real worker processes: same bytes as one process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.auditors import AuditConfig
from shared.engine import Engine
from shared.report import write_outputs

ROOT = Path(__file__).parent.parent
DATA = ROOT / "tests" / "data"
INPUTS = [str(DATA / "hftbacktest" / "spot"), str(DATA / "cryptofeed_deribit"), str(DATA / "cryptofeed_ftx")]
OUTPUTS = ("report.json", "audit/records.jsonl", "audit/MANIFEST")


@pytest.fixture
def broker(redis_client, namespace: str) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A Redis database of its own (14), emptied before and after."""
    base = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    url = base.rsplit("/", 1)[0] + "/14"
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def _worker(url: str, queues: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": url}
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.app",
        "worker",
        "-Q",
        queues,
        "--pool",
        "solo",
        "--without-heartbeat",
        "--without-mingle",
        "--without-gossip",
        "-l",
        "warning",
    ]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait(url: str, jid: str, timeout: float = 120.0) -> dict:
    import redis

    from producers.submit import status

    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = status(client, jid)
        if got["state"] == "done":
            return got
        time.sleep(0.2)
    raise AssertionError(f"job {jid} not done in {timeout} s: {status(client, jid)}")


def test_a_job_on_the_real_redis_matches_one_process_byte_for_byte(broker: str, tmp_path: Path) -> None:
    import redis

    from producers.submit import submit

    client = redis.Redis.from_url(broker)
    workers = [_worker(broker, "book,aggregate"), _worker(broker, "book")]
    try:
        sub = submit(broker, INPUTS, AuditConfig(), str(tmp_path / "pipeline"))
        assert sub.new and sub.families >= 3
        again = submit(broker, INPUTS, AuditConfig(), str(tmp_path / "elsewhere"))
        assert again.job == sub.job and not again.new  # the claim: nothing is submitted twice
        done = _wait(broker, sub.job)
        assert done["segments_done"] == done["segments_total"] == sub.families
        assert done["dead_letters"] == 0
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=30)
    write_outputs(Engine(AuditConfig()).run(INPUTS), str(tmp_path / "single"))
    for rel in OUTPUTS:
        assert (tmp_path / "pipeline" / rel).read_bytes() == (tmp_path / "single" / rel).read_bytes(), rel
    # The job's transient keys are gone; its state remains (and the claim, outside the job).
    assert sorted(k.decode() for k in client.keys("retape:job:*")) == [f"retape:job:{sub.job}"]


def test_produce_and_status_commands(broker: str, tmp_path: Path) -> None:
    def retape(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "producers.cli", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "REDIS_URL": broker},
            check=False,
        )

    first = retape("produce", INPUTS[0], "--out", str(tmp_path / "o"))
    assert first.returncode == 0, first.stderr
    jid = first.stdout.strip()
    second = retape("produce", INPUTS[0], "--out", str(tmp_path / "o"))
    assert second.stdout.strip() == jid and "already submitted" in second.stderr
    import json

    got = json.loads(retape("status", jid).stdout)
    assert got == {"job": jid, "state": "running", "segments_total": 1, "segments_done": 0, "dead_letters": 0}
    bad = subprocess.run(
        [sys.executable, "-m", "producers.cli", "produce", INPUTS[0], "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "REDIS_URL"},
    )
    assert bad.returncode == 2 and "no broker" in bad.stderr
