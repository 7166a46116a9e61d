"""The job layer's fan-in with real brokers and real worker processes: segments whose stages
each spawn sub-tasks on other queues, combined by a later stage (a barrier the last answer
trips).  A worker killed mid-way changes nothing: same bytes as an undisturbed run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis
from fanin_kind import plan_fanin
from pipeline_helpers import DATA, env, wait_for

from producers.local import LocalWorkers
from producers.run import Submitter, Waiting
from shared.jobs import Field, Writer

SEGMENTS = [
    [str(DATA / "cryptofeed" / "BINANCE.ws.1.0"), str(DATA / "cryptofeed" / "OKX.ws.1.0")],
    [str(DATA / "hftbacktest" / "spot" / "btcusdt_20240808.gz")],
    [str(p) for p in sorted((DATA / "cryptofeed_deribit").iterdir())],
]


def _run(url: str, out: Path, log: Path, subtask_s: float, kill: bool) -> tuple[bytes, int]:
    """The job's output, and how many task starts it took."""
    client = redis.Redis.from_url(url)
    job, plan = plan_fanin(SEGMENTS, str(out))
    workers = LocalWorkers(
        url, 2, str(log), embedded=False, app="fanin_kind", env=env(FANIN_SUBTASK_S=str(subtask_s))
    )
    with workers as pool:
        submitter = Submitter(client, url, job, plan)
        submitter.submit(Writer.SUBMITTER, rerun_done=True)
        if kill:
            # Kill the pool's children while the first sub-tasks run (stage 0 is done).
            wait_for(lambda: submitter.store.count(Field.STARTED) >= 4, 60, "sub-tasks running")
            time.sleep(subtask_s / 2)
            assert pool.proc is not None
            children = subprocess.run(
                ["pgrep", "-P", str(pool.proc.pid)], capture_output=True, text=True, check=False
            ).stdout.split()
            assert children
            for pid in children:
                os.kill(int(pid), signal.SIGKILL)
        submitter.wait_for_segments(Waiting(timeout_s=120))
        report = submitter.collect(str(out))
        submitter.release()
    assert len(report["segments"]) == len(SEGMENTS)
    return (out / "fanin.json").read_bytes(), submitter.store.count(Field.STARTED)


def test_a_fan_in_job_gives_the_same_bytes_with_a_worker_killed_mid_way(broker: str, tmp_path: Path) -> None:
    quiet, starts = _run(broker, tmp_path / "quiet", tmp_path / "quiet.log", 0.0, kill=False)
    # 3 segments x 3 stages, and 2 x 5 sub-tasks (one per file, twice)
    assert starts == 3 * 3 + 2 * 5
    disturbed, restarts = _run(broker, tmp_path / "disturbed", tmp_path / "disturbed.log", 0.4, kill=True)
    assert restarts > starts  # the killed tasks were delivered again
    assert disturbed == quiet
    segments = __import__("orjson").loads(quiet)["segments"]
    # Every stage ran: the digests of stage 0's sub-tasks and stage 1's first lines are in.
    assert all(len(s["digests"]) == len(s["files"]) == len(s["first_lines"]) for s in segments)
    assert all("failed" not in d for s in segments for d in s["digests"] + s["first_lines"])
    client = redis.Redis.from_url(broker)
    assert client.lrange("retape:dead-letters", 0, -1) == []
    left = [k.decode() for k in client.keys("retape:job:*")]
    assert all(k.count(":") == 2 for k in left), left  # only finished jobs' hashes
