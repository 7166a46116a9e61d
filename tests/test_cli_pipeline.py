"""`retape audit` as a user runs it: the embedded default on plain and gzip inputs, Ctrl-C and
kill -9 of the command, two runs at once, an output directory that cannot be written, a
broker that cannot be reached, a broker with no worker attached."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_helpers import (
    DATA,
    alive,
    descendants,
    env,
    free_port,
    outputs,
    retape,
    start_retape,
    wait_for,
)

from bench.run import build_capture

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]


@pytest.fixture(scope="module")
def four_plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Four plain-text captures of four symbols (85 MB each), named alike but for a digit."""
    folder = tmp_path_factory.mktemp("four")
    for n, symbol in enumerate(SYMBOLS):
        build_capture(8, folder / f"synthetic_usdm_{n}.txt", symbol)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def big_plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One plain-text capture of 350 MB (the size that once broke the default command)."""
    folder = tmp_path_factory.mktemp("big")
    build_capture(33, folder / "btcusdt_20240808.txt")
    yield folder
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def long_plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One plain capture long enough to be interrupted (hundreds of MB: the fast lane and
    two workers audit it in a few seconds)."""
    folder = tmp_path_factory.mktemp("long")
    build_capture(48, folder / "btcusdt.txt")
    return folder


def _in_process(paths: list[str], out: Path) -> dict[str, bytes]:
    proc = retape("audit", *paths, "--out", str(out), "--in-process", "--quiet")
    assert proc.returncode == 0, proc.stderr
    return outputs(out)


def test_embedded_default_on_plain_files_of_four_symbols(four_plain: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = retape("audit", str(four_plain), "--out", str(out), "--no-progress", environ=env(TMPDIR=str(tmp)))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    report = json.loads((out / "report.json").read_bytes())
    assert sorted(s["symbol"] for s in report["streams"]) == SYMBOLS
    assert outputs(out) == _in_process([str(four_plain)], tmp_path / "single")
    assert list(tmp.iterdir()) == []  # no worker log or run directory left behind
    assert not (out / "retape-workers.log").exists()


def test_embedded_default_on_a_350_mb_plain_capture(big_plain: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = retape("audit", str(big_plain), "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    report = json.loads((out / "report.json").read_bytes())
    assert report["inputs"][0]["audited"] and report["streams"][0]["messages"] > 200_000
    assert outputs(out) == _in_process([str(big_plain)], tmp_path / "single")


def test_embedded_default_on_the_bundled_gzip_captures(tmp_path: Path) -> None:
    paths = [str(DATA / "hftbacktest"), str(DATA / "cryptofeed")]
    proc = retape("audit", *paths, "--out", str(tmp_path / "out"), "--no-progress", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert outputs(tmp_path / "out") == _in_process(paths, tmp_path / "single")


def test_a_second_run_into_the_same_output_directory_is_refused(long_plain: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = start_retape("audit", str(long_plain), "--out", str(out), "--no-progress", "--workers", "1")
    try:
        wait_for(
            lambda: (out / ".retape.lock").exists() and (out / ".retape.lock").read_text(), 30, "the lock"
        )
        second = retape("audit", str(DATA / "hftbacktest" / "spot"), "--out", str(out), "--in-process")
        assert second.returncode == 2
        assert second.stderr.startswith("retape: error: --out") and "another retape run" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
    finally:
        first.kill()
    report = json.loads((out / "report.json").read_bytes())
    assert [s["symbol"] for s in report["streams"]] == ["BTCUSDT"]


def test_an_output_directory_that_cannot_be_written_is_one_line_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    began = time.monotonic()
    proc = retape("audit", str(DATA / "hftbacktest"), "--out", str(blocker / "out"))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"retape: error: --out {blocker / 'out'}: cannot write there")
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
    print(f"\nrefused in {time.monotonic() - began:.2f} s")


def test_a_broker_that_cannot_be_reached_says_why(tmp_path: Path) -> None:
    from producers.local import EmbeddedBroker

    port = free_port()
    refused = retape(
        "audit",
        str(DATA / "hftbacktest"),
        "--out",
        str(tmp_path / "o"),
        "--broker",
        f"redis://127.0.0.1:{port}/0",
    )
    assert refused.returncode == 2
    assert "could not connect to the broker at redis://127.0.0.1" in refused.stderr
    assert "nothing listens there" in refused.stderr
    with EmbeddedBroker(str(tmp_path)) as server:
        wrong = f"redis://:wrong@127.0.0.1:{server.port}/0"
        bad = retape("audit", str(DATA / "hftbacktest"), "--out", str(tmp_path / "o"), "--broker", wrong)
        assert (
            bad.returncode == 2
            and "refused the password" in bad.stderr
            and "wrong" not in bad.stderr.split("(")[0]
        )
        none = f"redis://127.0.0.1:{server.port}/0"
        bare = retape("status", "abc", "--broker", none)
        assert bare.returncode == 2 and "needs a password" in bare.stderr
    for proc in (refused, bad, bare):
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_no_worker_attached_is_said_once_and_timeout_gives_up_with_exit_3(
    broker: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = retape(
        "audit",
        str(DATA / "hftbacktest" / "spot"),
        "--out",
        str(out),
        "--timeout",
        "3",
        environ=env(REDIS_URL=broker, RETAPE_NO_WORKER_NOTICE_S="1"),
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.count("no worker has taken a task") == 1 and "retape worker" in proc.stderr
    spot = str(DATA / "hftbacktest" / "spot" / "btcusdt_20240808.gz")
    assert f"retape: not audited: {spot}: gave up after 3 s (--timeout)" in proc.stderr
    report = json.loads((out / "report.json").read_bytes())
    assert [i["audited"] for i in report["inputs"]] == [False]
    import redis

    jobs = [k for k in redis.Redis.from_url(broker).scan_iter(match="retape:job:*") if k.count(b":") == 2]
    (state,) = [redis.Redis.from_url(broker).hget(k, "state") for k in jobs]
    assert state == b"cancelled"  # its queued tasks will do nothing when a worker comes


def _tree_when_busy(proc, out: Path) -> list[int]:  # type: ignore[no-untyped-def]
    """The command's processes once its workers are auditing (the progress line moved)."""
    wait_for(lambda: len(descendants(proc.pid)) >= 3, 60, "the broker and the workers")
    time.sleep(1.0)
    tree = descendants(proc.pid)
    assert proc.poll() is None, "the audit ended before it could be interrupted"
    return tree


def test_kill_9_of_the_command_leaves_nothing_and_a_rerun_completes(long_plain: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["audit", str(long_plain), "--out", str(out), "--no-progress", "--workers", "2"]
    proc = start_retape(*args)
    tree = _tree_when_busy(proc, out)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while alive(tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive(tree) == [], "processes of the killed command still run"
    again = retape(*args)
    assert again.returncode == 0, again.stderr
    assert outputs(out) == _in_process([str(long_plain)], tmp_path / "single")


def test_ctrl_c_stops_everything_within_2_s_without_a_traceback(long_plain: Path, tmp_path: Path) -> None:
    proc = start_retape("audit", str(long_plain), "--out", str(tmp_path / "out"), "--workers", "2")
    tree = _tree_when_busy(proc, tmp_path / "out")
    began = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: the foreground process group
    _, err = proc.communicate(timeout=30)
    while alive(tree) and time.monotonic() - began < 10:
        time.sleep(0.02)
    elapsed = time.monotonic() - began
    print(f"\nCtrl-C to every process gone: {elapsed:.2f} s")
    assert proc.returncode == 130 and alive(tree) == []
    assert err.rstrip().endswith("retape: interrupted") and "Traceback" not in err
    assert elapsed < 2


def test_kill_9_of_the_command_on_a_shared_broker_and_the_rerun_takes_the_job_over(
    broker: str, long_plain: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = [
        "audit",
        str(long_plain),
        "--out",
        str(out),
        "--no-progress",
        "--broker",
        broker,
        "--workers",
        "2",
    ]
    proc = start_retape(*args)
    tree = _tree_when_busy(proc, out)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    wait_for(lambda: alive(tree) == [], 10, "the killed command's workers to go")
    began = time.monotonic()
    again = retape(*args)  # its lease names a process of this host that is gone: taken at once
    assert again.returncode == 0, again.stderr
    assert "waiting up to" not in again.stderr
    print(f"\nre-run after kill -9: {time.monotonic() - began:.1f} s")
    assert outputs(out) == _in_process([str(long_plain)], tmp_path / "single")
