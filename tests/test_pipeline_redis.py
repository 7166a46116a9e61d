"""The pipeline with real brokers and real worker processes, on both servers retape runs on:
the machine's Redis (database 14, emptied before and after) and a valkey-server of the kind
``retape audit`` embeds (with its password).

- the same bytes from one process, the embedded default, and each broker with 1 and 4
  workers, reading inputs from disk or through the broker;
- a worker process killed with SIGKILL mid-job: the job completes, byte-identical;
- the broker stopped and restarted mid-job: exit 3 with a clear message, and a re-run completes;
- a poison segment: dead-lettered with its reason, the rest of the job completes, exit 3;
- ``produce`` / ``status``: overlapping producers submit once; deleted outputs are re-written.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_helpers import (
    DATA,
    ROOT,
    env,
    free_port,
    outputs,
    redis_server_binary,
    retape,
    server_process,
    start_retape,
    wait_for,
)

from producers.local import LocalWorkers, server_binary

INPUTS = [
    str(DATA / "hftbacktest" / "spot"),
    str(DATA / "cryptofeed_deribit"),
    str(DATA / "cryptofeed_ftx"),
    str(DATA / "nautilus"),
]


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The reference: the engine in one process, no broker."""
    out = tmp_path_factory.mktemp("single")
    proc = retape("audit", *INPUTS, "--out", str(out), "--in-process", "--quiet")
    assert proc.returncode == 0, proc.stderr
    return outputs(out)


def workers(url: str, count: int, log: Path, app: str = "workers.app", **extra: str) -> LocalWorkers:
    return LocalWorkers(url, count, str(log), embedded=False, app=app, env=env(**extra))


def pool_children(pool: LocalWorkers) -> list[int]:
    assert pool.proc is not None
    found = subprocess.run(["pgrep", "-P", str(pool.proc.pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in found.stdout.split()]


def job_hash(client) -> dict[bytes, bytes]:  # type: ignore[no-untyped-def]
    """The one running job's hash."""
    for key in client.scan_iter(match="retape:job:*"):
        if key.count(b":") == 2:
            return dict(client.hgetall(key))
    return {}


# -- the same bytes everywhere ---------------------------------------------------------


def test_the_embedded_default_gives_the_bytes_of_one_process(
    single: dict[str, bytes], tmp_path: Path
) -> None:
    out = tmp_path / "embedded"
    proc = retape("audit", *INPUTS, "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert outputs(out) == single
    assert {"report.json", "audit/records.jsonl", "audit/MANIFEST", "metrics.prom"} <= set(single)
    assert any(name.startswith("books/") for name in single)


@pytest.mark.parametrize("read", ["direct", "broker"])
def test_same_bytes_with_1_and_4_workers_reading_from_disk_or_through_the_broker(
    broker: str, single: dict[str, bytes], tmp_path: Path, read: str
) -> None:
    import redis

    extra = {"RETAPE_READ_INPUTS": read}
    for count in (1, 4):
        out = tmp_path / f"w{count}"
        with workers(broker, count, tmp_path / f"w{count}.log", **extra):
            proc = retape("audit", *INPUTS, "--out", str(out), "--broker", broker, "--no-progress")
        assert proc.returncode == 0, proc.stderr
        assert outputs(out) == single, count
    # Only the finished job's hash is left, with an expiry.
    client = redis.Redis.from_url(broker)
    left = sorted(k.decode() for k in client.keys("retape:*"))
    assert all(k.startswith("retape:job:") and k.count(":") == 2 for k in left), left
    assert all(client.ttl(k) > 0 for k in left)


# -- a worker killed mid-job -----------------------------------------------------------


@pytest.mark.parametrize("read", ["direct", "broker"])
def test_a_worker_killed_mid_job_changes_nothing(broker: str, tmp_path: Path, read: str) -> None:
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
    pool = workers(broker, 2, tmp_path / "w.log", RETAPE_READ_INPUTS=read)
    with pool:
        audit = start_retape(
            "audit", str(inputs), "--out", str(tmp_path / "o"), "--broker", broker, "--quiet"
        )
        wait_for(lambda: int(job_hash(client).get(b"started", 0)) >= 2, 60, "both segments started")
        victims = pool_children(pool)
        assert victims
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        _, err = audit.communicate(timeout=180)
        assert audit.returncode == 0, err
    assert outputs(tmp_path / "o") == outputs(reference)
    assert client.lrange("retape:dead-letters", 0, -1) == []  # delivered again, not dead-lettered


# -- the broker stopped and restarted mid-job ------------------------------------------


@pytest.mark.parametrize("server", ["redis-server", "valkey-server"])
def test_broker_restarted_mid_job_fails_clearly_and_a_rerun_completes(
    single: dict[str, bytes], tmp_path: Path, server: str
) -> None:
    import redis

    binary = redis_server_binary() if server == "redis-server" else server_binary()
    password = "s3cret" if server == "valkey-server" else None
    port = free_port()
    auth = f":{password}@" if password else ""
    url = f"redis://{auth}127.0.0.1:{port}/0"
    proc = server_process(binary, port, tmp_path, password)
    try:
        with workers(url, 1, tmp_path / "w.log"):
            client = redis.Redis(port=port, password=password)
            audit = start_retape("audit", *INPUTS, "--out", str(tmp_path / "o"), "--broker", url, "--quiet")
            wait_for(lambda: int(job_hash(client).get(b"done", 0)) >= 1, 60, "a first segment")
            proc.terminate()
            proc.wait(timeout=10)
            proc = server_process(binary, port, tmp_path, password)  # back, empty
            _, err = audit.communicate(timeout=120)
            assert audit.returncode == 3, err
            assert "retape: error:" in err and "run the same command again" in err, err
            assert "Traceback" not in err and (password or "s3cret") not in err
            report = json.loads((tmp_path / "o" / "report.json").read_bytes())
            assert report["inputs"] and all(i["audited"] is False for i in report["inputs"])
            # The workers reconnected by themselves; the same command now completes.
            again = retape(
                "audit", *INPUTS, "--out", str(tmp_path / "o"), "--broker", url, "--no-progress", "--quiet"
            )
            assert again.returncode == 0, again.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert outputs(tmp_path / "o") == single


# -- a poison segment ------------------------------------------------------------------


def test_a_poison_segment_is_dead_lettered_and_the_rest_completes(broker: str, tmp_path: Path) -> None:
    import redis

    inputs = tmp_path / "in"
    shutil.copytree(DATA / "cryptofeed_deribit", inputs / "deribit")
    poison = inputs / "bad" / "poison_20240808.gz"
    poison.parent.mkdir()
    shutil.copy(DATA / "hftbacktest" / "spot" / "btcusdt_20240808.gz", poison)
    with workers(broker, 1, tmp_path / "w.log", app="crashing_worker"):
        proc = retape("audit", str(inputs), "--out", str(tmp_path / "o"), "--broker", broker, "--no-progress")
    assert proc.returncode == 3, proc.stderr
    assert f"retape: not audited: {poison}: the worker died while running it" in proc.stderr
    client = redis.Redis.from_url(broker)
    letters = [json.loads(raw) for raw in client.lrange("retape:dead-letters", 0, -1)]
    assert len(letters) == 1
    letter = letters[0]
    assert letter["task"] == "retape.segment" and letter["queue"] == "book"
    assert letter["reason"] == "the worker died while running it" and letter["deliveries"] == 3
    report = json.loads((tmp_path / "o" / "report.json").read_bytes())
    bad = [i for i in report["inputs"] if "poison" in os.path.basename(i["path"])]
    assert len(bad) == 1 and bad[0]["audited"] is False
    assert bad[0]["error"].startswith("not audited: the worker died")
    # Everything else was audited as it would be without the poison file.
    shutil.rmtree(poison.parent)
    alone = tmp_path / "alone"
    assert retape("audit", str(inputs), "--out", str(alone), "--in-process", "--quiet").returncode == 0
    assert report["streams"] == json.loads((alone / "report.json").read_bytes())["streams"]
    assert "retape_job_dead_letters 1" in (tmp_path / "o" / "metrics.prom").read_text()


# -- produce and status ----------------------------------------------------------------


def test_overlapping_producers_submit_once_and_deleted_outputs_are_written_again(
    broker: str, tmp_path: Path
) -> None:
    environ = env(REDIS_URL=broker)
    out = tmp_path / "o"
    args = ["produce", *INPUTS, "--out", str(out)]
    with workers(broker, 2, tmp_path / "w.log"):
        first = subprocess.Popen(
            [sys.executable, "-m", "producers.cli", *args],
            cwd=ROOT,
            env=environ,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert first.stdout is not None
        jid = first.stdout.readline().strip()  # printed at once, before the data is served
        second = retape(*args, environ=environ)  # cron fires again while the first still runs
        assert second.returncode == 0 and second.stdout.strip() == jid
        assert "nothing new" in second.stderr
        assert first.wait(timeout=180) == 0

        def state() -> dict[str, object]:
            return dict(json.loads(retape("status", jid, environ=environ).stdout))

        wait_for(lambda: state()["state"] == "done", 60, "the aggregator")
        got = state()
        assert got["segments_done"] == got["segments_total"] >= 4
        assert got["dead_letters"] == 0 and got["messages"] > 0
        written = outputs(out)
        assert {"report.json", "audit/MANIFEST"} <= set(written)
        third = retape(*args, environ=environ)  # the next cron run: already done
        assert third.returncode == 0 and third.stdout.strip() == jid and "already done" in third.stderr
        shutil.rmtree(out)  # somebody deleted the outputs: the next run writes them again
        fourth = retape(*args, environ=environ)
        assert fourth.returncode == 0, fourth.stderr
        wait_for(lambda: (out / "audit" / "MANIFEST").exists(), 60, "the outputs written again")
    assert outputs(out) == written
    no_broker = retape("produce", INPUTS[0], "--out", str(tmp_path))
    assert no_broker.returncode == 2 and "no broker" in no_broker.stderr
    unknown = retape("status", "nosuchjob", environ=environ)
    assert unknown.returncode == 1 and json.loads(unknown.stdout)["state"] == "unknown"
    assert unknown.stderr.startswith("retape: error: no job nosuchjob on this broker")
