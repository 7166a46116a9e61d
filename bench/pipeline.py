"""Benchmark: the distributed pipeline against the single-process engine, in one run.

Input: ``--families`` independent recordings of Binance USD-M BTCUSDT depth (the real
hftbacktest capture continued ``--copies`` times, see ``bench.run``), one directory each:
a multi-stream audit whose units of work are families.

Measured, end to end (submit to outputs written), with worker processes started first:

- the engine in this process (``Engine.run`` + ``write_outputs``): the baseline;
- the pipeline on a real Redis (a redis-server of its own, no persistence) with 1 worker;
- the same with 2 workers.

Printed: the 2-worker speed-up over 1 worker (target >= 1.6) and the pipeline's overhead
over the single process (1 worker; target < 10 %).  Then Redis memory: the peak of
``used_memory`` above its idle level, sampled every 20 ms, during the audit of a capture of
at least 10 million level updates, against the bound the producer's window sets.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

from bench.run import ROOT, build_capture
from producers.feeder import BLOCK_SIZE, WINDOW_BLOCKS
from producers.run import run_job
from shared.auditors import AuditConfig
from shared.engine import Engine
from shared.report import write_outputs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("the pipeline benchmark needs redis-server on PATH")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", str(workdir), "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis(port=self.port)
        for _ in range(500):
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.01)
        raise SystemExit("redis-server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


class Workers:
    def __init__(self, url: str, count: int) -> None:
        cmd = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--queues", "book,aggregate"]
        cmd += ["--pool", "prefork", "--concurrency", str(count), "--loglevel", "ERROR"]
        cmd += ["--without-gossip", "--without-mingle", "--hostname", f"bench{count}-{time.time_ns()}@%h"]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, "REDIS_URL": url},
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        from workers.app import create_app

        app = create_app(url)
        for _ in range(200):
            replies = app.control.ping(timeout=0.5)
            if replies:
                return
        raise SystemExit("workers did not answer")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)  # the parent: a warm shutdown of its children
        self.proc.wait()


def pipeline_seconds(server: RedisServer, workers: int, paths: list[str], out: Path) -> float:
    pool = Workers(server.url, workers)
    try:
        server.client.flushdb()
        t0 = time.perf_counter()
        run_job(server.url, paths, AuditConfig(), str(out), progress=False)
        return time.perf_counter() - t0
    finally:
        pool.stop()


def single_seconds(paths: list[str], out: Path) -> float:
    t0 = time.perf_counter()
    write_outputs(Engine(AuditConfig()).run(paths), str(out))
    return time.perf_counter() - t0


def peak_memory(server: RedisServer, paths: list[str], out: Path, workers: int) -> tuple[int, int]:
    """(idle used_memory, peak used_memory) during a pipeline audit of ``paths``."""
    pool = Workers(server.url, workers)
    server.client.flushdb()
    idle = int(server.client.info("memory")["used_memory"])
    peak = idle
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        probe = redis.Redis(port=server.port)
        while not stop.is_set():
            peak = max(peak, int(probe.info("memory")["used_memory"]))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        run_job(server.url, paths, AuditConfig(), str(out), progress=False)
    finally:
        stop.set()
        sampler.join()
        pool.stop()
    return idle, peak


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--families", type=int, default=8)
    parser.add_argument("--copies", type=int, default=2, help="continuations of the capture per family")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--big-levels", type=int, default=10_000_000, help="level updates of the memory run")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="retape-bench-"))
    try:
        paths = []
        levels = 0
        for n in range(args.families):
            d = work / "in" / f"recorder{n}"
            d.mkdir(parents=True)
            if n == 0:
                _, levels_one, _ = build_capture(args.copies, d / "btcusdt_20240808.gz")
            else:
                shutil.copy(work / "in" / "recorder0" / "btcusdt_20240808.gz", d / "btcusdt_20240808.gz")
            levels += levels_one
            paths.append(str(d))
        print(f"input: {args.families} families, {levels:,} level updates in all")
        server = RedisServer(work)
        try:
            times: dict[str, list[float]] = {"single": [], "1 worker": [], "2 workers": []}
            for r in range(args.repeat):
                times["single"].append(single_seconds(paths, work / f"single{r}"))
                times["1 worker"].append(pipeline_seconds(server, 1, paths, work / f"one{r}"))
                times["2 workers"].append(pipeline_seconds(server, 2, paths, work / f"two{r}"))
            best = {k: min(v) for k, v in times.items()}
            for name, secs in best.items():
                runs = ", ".join(f"{t:.2f}" for t in times[name])
                print(f"{name:>10}: {secs:6.2f} s  {levels / secs / 1e6:5.2f} M updates/s  (runs {runs})")
            same = all(
                (work / f"{a}0" / "report.json").read_bytes()
                == (work / "single0" / "report.json").read_bytes()
                for a in ("one", "two")
            )
            print(f"outputs identical to the single process: {same}")
            speedup = best["1 worker"] / best["2 workers"]
            overhead = best["1 worker"] / best["single"] - 1
            print(f"speed-up, 2 workers over 1: {speedup:.2f}x (target >= 1.6)")
            print(f"pipeline overhead, 1 worker over one process: {overhead * 100:+.1f} % (target < 10 %)")

            copies = -(-args.big_levels * args.copies // levels_one)
            big = work / "big" / "btcusdt_20240808.gz"
            big.parent.mkdir()
            _, big_levels, _ = build_capture(copies, big)
            idle, peak = peak_memory(server, [str(big.parent)], work / "bigout", 2)
            bound = WINDOW_BLOCKS * BLOCK_SIZE * 2
            size = big.stat().st_size / 2**20
            print(f"Redis memory, {big_levels:,} level updates ({size:.0f} MiB compressed), 2 workers:")
            print(
                f"  peak {(peak - idle) / 2**20:.1f} MiB above idle; stated bound {bound / 2**20:.0f} MiB "
                f"of data (window {WINDOW_BLOCKS} x {BLOCK_SIZE >> 20} MiB x 2 readers) + 1 MiB of job state"
            )
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
