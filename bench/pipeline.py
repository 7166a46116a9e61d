"""Benchmark: the job pipeline (producer, Redis, Celery workers) against one process, in one run.

Input: four independent captures of four symbols (BTCUSDT, ETHUSDT, SOLUSDT, BNBUSDT), each
the real Binance USD-M depth capture continued until it holds about ``--size-mb`` MB of plain
text (:func:`bench.run.build_capture`), in one directory as ``synthetic_usdm_0.txt`` ...
``_3.txt``; and the same four gzip-compressed in another directory.  They share no stream, so
the planner makes four segments of them, whatever their names.

Measured for each directory, end to end (inputs planned and hashed to outputs written):

- one process: ``Engine(cfg).run`` + ``write_outputs``, what ``retape audit --in-process``
  does (the baseline);
- the pipeline with 1 and with 2 workers: ``plan_audit``, then ``Submitter`` submit, wait,
  collect, what ``retape audit --broker URL`` does, on a ``redis-server`` of the benchmark's
  own (free port, no persistence).  Before each run the database is flushed and a fresh
  ``LocalWorkers`` pool is started and has answered a ping; the clock starts after that.

Both run with the configuration ``retape audit`` has when given no option (``cfg``: a rebuilt
book every 60 s, so the book CSVs are among the outputs compared; ``AuditConfig()`` writes
none).

Runs are interleaved, ``--repeat`` rounds, and the best time of each is kept.  Printed: the
seconds and M level updates/s of each, the ratios 2 workers over 1 (target >= 1.6) and
1 worker over one process (overhead, target <= 10 %), and whether every output file of every
pipeline run is byte-identical to the one-process output.

Then the fixed costs: the embedded broker's start-up (median of 5 ``EmbeddedBroker`` starts)
and the wall time of ``retape audit SAMPLE --quiet`` (embedded broker and workers, the
default) against ``--in-process`` on a tiny bundled capture (median of 3 each).

Then the data path through the broker: the 2-worker run on the plain input with
``RETAPE_READ_INPUTS=broker`` in the workers' environment (the producer streams the inputs
through Redis), its time against the direct-read 2-worker time, and the peak of Redis'
``used_memory`` above its idle level (sampled every 20 ms from a thread) against the bound
the feeder's window sets: ``WINDOW_BLOCKS`` x ``BLOCK_SIZE`` x readers.

Then one recording across workers, twice: the real capture continued to ``--one-recording-mb``
MB (354) and a stream of ``--one-recording-messages`` small messages (1 000 000), each one
plain file of one stream that the workers audit in chunks (:mod:`shared.chunking`): one
process, the pipeline with 1, 2 and 4 workers, interleaved, medians, 2 workers over 1
(target >= 1.7) and whether every output is byte-identical to the one-process output.

Every ratio compares runs of this one invocation; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import NamedTuple

import redis

from bench.run import ROOT, build_capture, build_small_messages
from producers.cli import audit_config as cli_config
from producers.cli import build_parser
from producers.feeder import BLOCK_SIZE, WINDOW_BLOCKS
from producers.local import EmbeddedBroker, LocalWorkers
from producers.run import Submitter, Waiting, connect
from shared import chunking
from shared.audit_job import plan_audit
from shared.auditors import AuditConfig
from shared.engine import Engine
from shared.jobflow import Outcome
from shared.jobs import Writer
from shared.report import write_outputs

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT")
SAMPLE = ROOT / "tests" / "data" / "hftbacktest" / "spot"
SPEEDUP_TARGET = 1.6
OVERHEAD_TARGET = 0.10
SAMPLE_EVERY_S = 0.02
READ_INPUTS = "RETAPE_READ_INPUTS"
READY_TIMEOUT_S = 60.0
MB = 1_000_000
MIB = 1 << 20

ONE = "one process"
W1 = "pipeline, 1 worker"
W2 = "pipeline, 2 workers"
W2_BROKER = "pipeline, 2 workers, inputs through the broker"


# -- inputs ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Inputs:
    """One directory of captures and what is in them."""

    label: str
    directory: Path
    files: tuple[Path, ...]
    size: int  # bytes on disk
    messages: int
    levels: int

    @property
    def paths(self) -> list[str]:
        return [str(self.directory)]


def copies_for(size_mb: float, work: Path) -> int:
    """How many continuations of the capture make about ``size_mb`` MB of plain text."""
    probe = work / "probe.txt"
    build_capture(1, probe)
    one_copy = probe.stat().st_size
    probe.unlink()
    return max(1, round(size_mb * MB / one_copy))


def gzip_copy(src: Path, dest: Path) -> None:
    """``dest``: ``src`` gzip-compressed at level 1 (as ``build_capture`` writes gzip)."""
    with open(src, "rb") as fh, gzip.open(dest, "wb", compresslevel=1) as out:
        shutil.copyfileobj(fh, out, 1 << 20)


def build_inputs(work: Path, size_mb: float) -> tuple[Inputs, Inputs, int]:
    """The plain directory, the gzip directory (same captures) and the copies per capture."""
    copies = copies_for(size_mb, work)
    plain_dir, gzip_dir = work / "plain", work / "gzip"
    plain_dir.mkdir()
    gzip_dir.mkdir()
    plain: list[Path] = []
    packed: list[Path] = []
    messages = levels = 0
    for n, symbol in enumerate(SYMBOLS):
        txt = plain_dir / f"synthetic_usdm_{n}.txt"
        m, lv, _ = build_capture(copies, txt, symbol)
        messages += m
        levels += lv
        gz = gzip_dir / f"synthetic_usdm_{n}.txt.gz"
        gzip_copy(txt, gz)
        plain.append(txt)
        packed.append(gz)

    def inputs(label: str, directory: Path, files: list[Path]) -> Inputs:
        size = sum(f.stat().st_size for f in files)
        return Inputs(label, directory, tuple(files), size, messages, levels)

    return inputs("plain", plain_dir, plain), inputs("gzip", gzip_dir, packed), copies


# -- processes ---------------------------------------------------------------------------


class RedisServer:
    """A ``redis-server`` of the benchmark's own: loopback, a free port, no persistence."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("the pipeline benchmark needs redis-server on PATH")
        for _ in range(5):  # another process may take the free port before the server does
            self.port = free_port()
            self.proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
                + ["--dir", str(directory), "--maxmemory-policy", "noeviction"],
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C reaches only the benchmark, which stops it
            )
            self.client = redis.Redis(port=self.port)
            try:
                if self._ready():
                    return
            except BaseException:
                self.stop()
                raise
            self.stop()
        raise SystemExit("redis-server did not start")

    def _ready(self) -> bool:
        for _ in range(1000):
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(redis.ConnectionError):
                return bool(self.client.ping())
            time.sleep(0.01)
        return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def worker_pool(url: str, count: int, log: Path, through_broker: bool) -> Iterator[LocalWorkers]:
    """``count`` workers attached to ``url`` that have answered a ping; stopped on leaving
    (a warm stop after a run that went well, SIGKILL otherwise)."""
    env = {READ_INPUTS: "broker" if through_broker else "auto"}
    pool = LocalWorkers(url, count, str(log), embedded=False, env=env).start()
    try:
        pool.wait_ready(READY_TIMEOUT_S)
        yield pool
    except BaseException:
        pool.stop(fast=True)
        raise
    pool.stop(fast=False)


class MemorySampler:
    """The peak of Redis' ``used_memory`` while it runs, sampled every 20 ms from a thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-memory", daemon=True)

    def _run(self) -> None:
        probe = redis.Redis.from_url(self.url)
        try:
            while not self._stop.is_set():
                self.peak = max(self.peak, int(probe.info("memory")["used_memory"]))
                self.samples += 1
                self._stop.wait(SAMPLE_EVERY_S)
        finally:
            probe.close()

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- one run of each kind ----------------------------------------------------------------


@cache
def command_config() -> AuditConfig:
    """What ``retape audit PATH`` audits with when given no option."""
    return cli_config(build_parser().parse_args(["audit", str(SAMPLE)]))


@dataclass(slots=True)
class Run:
    seconds: float
    out: Path
    memory_above_idle: int = 0  # bytes, when sampled
    fed: int = 0  # input bytes the producer streamed through Redis
    sent: int = 0  # what they took in Redis (compressed)
    peak_unread: int = 0  # the most unread blocks seen on one data stream


def one_process(inputs: Inputs, out: Path) -> Run:
    t0 = time.perf_counter()
    outcome = Engine(command_config()).run(inputs.paths)
    outcome.settings = asdict(command_config())  # as `retape audit --in-process` does
    write_outputs(outcome, str(out))
    return Run(time.perf_counter() - t0, out)


def submit_and_wait(url: str, inputs: Inputs, out: Path, pool: LocalWorkers) -> Submitter:
    """What ``retape audit --broker URL`` does: plan, submit, serve the data, wait, collect."""
    job, plan = plan_audit(inputs.paths, command_config(), str(out), Writer.SUBMITTER)
    submitter = Submitter(connect(url), url, job, plan)
    try:
        if submitter.submit(Writer.SUBMITTER, rerun_done=True).outcome is not Outcome.NEW:
            raise SystemExit(f"job {job} was not submitted afresh (the database was flushed)")
        submitter.wait_for_segments(Waiting(alive=pool.check))
        report = submitter.collect(str(out))
    finally:
        submitter.release()
        submitter.client.close()
    missing = [i["path"] for i in report["inputs"] if i.get("audited") is False]
    if missing:
        raise SystemExit(f"the pipeline left inputs not audited: {missing}")
    return submitter


def pipeline(
    server: RedisServer, inputs: Inputs, workers: int, out: Path, through_broker: bool = False
) -> Run:
    """One pipeline run on a flushed database with a fresh pool, timed once it answers."""
    server.client.flushdb()
    log = out.parent / f"workers-{out.name}.log"
    with worker_pool(server.url, workers, log, through_broker) as pool:
        if not through_broker:
            t0 = time.perf_counter()
            submit_and_wait(server.url, inputs, out, pool)
            return Run(time.perf_counter() - t0, out)
        idle = server.used_memory()
        with MemorySampler(server.url) as memory:
            t0 = time.perf_counter()
            submitter = submit_and_wait(server.url, inputs, out, pool)
            seconds = time.perf_counter() - t0
        feeder = submitter.feeder
        assert feeder is not None
        return Run(
            seconds,
            out,
            memory_above_idle=max(0, memory.peak - idle),
            fed=feeder.bytes_read,
            sent=feeder.bytes_sent,
            peak_unread=feeder.peak_unread_blocks,
        )


# -- comparing outputs -------------------------------------------------------------------


def tree(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def differences(expected: Path, got: Path) -> list[str]:
    """The output files that are not byte-identical (missing on either side included)."""
    a, b = tree(expected), tree(got)
    return sorted(name for name in a.keys() | b.keys() if a.get(name) != b.get(name))


def describe_outputs(directory: Path) -> str:
    names = sorted(tree(directory))
    books = [n for n in names if n.startswith("books/")]
    others = [n for n in names if not n.startswith("books/")]
    return ", ".join(others + ([f"books/ ({len(books)} CSV)"] if books else []))


# -- the measured matrix -----------------------------------------------------------------


@dataclass(slots=True)
class Results:
    times: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    differing: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    broker_runs: list[Run] = field(default_factory=list)

    def add(self, inputs: Inputs, name: str, run: Run, reference: Path) -> None:
        key = (inputs.label, name)
        self.times.setdefault(key, []).append(run.seconds)
        self.differing.setdefault(key, set()).update(differences(reference, run.out))

    def best(self, inputs: Inputs, name: str) -> float:
        return min(self.times[(inputs.label, name)])


def measure(
    server: RedisServer, sets: list[Inputs], repeat: int, work: Path
) -> tuple[Results, dict[str, Path]]:
    """Every variant ``repeat`` times, interleaved; each pipeline output is compared with the
    first one-process output of its input and then removed."""
    results = Results()
    reference: dict[str, Path] = {}
    for r in range(repeat):
        for inputs in sets:
            variants: list[tuple[str, int, bool]] = [(W1, 1, False), (W2, 2, False)]
            if inputs.label == "plain":
                variants.append((W2_BROKER, 2, True))
            run = one_process(inputs, work / f"{inputs.label}-one-{r}")
            reference.setdefault(inputs.label, run.out)
            results.add(inputs, ONE, run, reference[inputs.label])
            if run.out != reference[inputs.label]:
                shutil.rmtree(run.out)
            for name, workers, through_broker in variants:
                out = work / f"{inputs.label}-{workers}w{'-broker' if through_broker else ''}-{r}"
                run = pipeline(server, inputs, workers, out, through_broker)
                results.add(inputs, name, run, reference[inputs.label])
                if through_broker:
                    results.broker_runs.append(run)
                shutil.rmtree(out)
            print(f"  round {r + 1}/{repeat}, {inputs.label}: done", flush=True)
    return results, reference


# -- fixed costs -------------------------------------------------------------------------


def broker_startups(work: Path, count: int = 5) -> list[float]:
    seconds = []
    for n in range(count):
        directory = work / f"embedded-{n}"
        directory.mkdir()
        with EmbeddedBroker(str(directory)) as broker:
            seconds.append(broker.startup_s)
    return seconds


def command_seconds(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def default_command_costs(sample: Path, work: Path, count: int = 3) -> tuple[list[float], list[float], bool]:
    """Wall times of ``retape audit SAMPLE --quiet``, embedded default and ``--in-process``,
    interleaved; and whether the two wrote the same outputs."""
    retape = str(Path(sys.executable).parent / "retape")
    embedded: list[float] = []
    in_process: list[float] = []
    for n in range(count):
        for times, extra in ((embedded, []), (in_process, ["--in-process"])):
            out = work / f"cmd-{len(extra)}-{n}"
            times.append(
                command_seconds([retape, "audit", str(sample), "--out", str(out), "--quiet", *extra])
            )
    same = not differences(work / "cmd-0-0", work / "cmd-1-0")
    return embedded, in_process, same


# -- printing ----------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def ms(values: list[float]) -> str:
    return ", ".join(f"{v * 1000:.0f}" for v in values)


def print_inputs(inputs: Inputs, copies: int) -> None:
    names = f"{inputs.files[0].name} ... {inputs.files[-1].name}"
    each = inputs.size / len(inputs.files) / MB
    print(
        f"input, {inputs.label}: {inputs.directory}: {len(inputs.files)} captures ({names}; "
        f"{', '.join(SYMBOLS)}; {copies} copies of the capture each)"
    )
    print(
        f"  {inputs.size / MB:.1f} MB on disk ({each:.1f} MB each), {inputs.messages:,} depth messages, "
        f"{inputs.levels:,} level updates"
    )


class Ratios(NamedTuple):
    speedup: float  # 1 worker's time over 2 workers'
    overhead: float  # 1 worker's time over one process', minus 1
    identical: bool  # every run's outputs byte-identical to the one-process output


def print_matrix(results: Results, inputs: Inputs, reference: Path) -> Ratios:
    """The times of one input set, their ratios and the output comparison."""
    print(f"\n{inputs.label}:{'seconds':>36}  M updates/s   runs (s)")
    for name in (ONE, W1, W2):
        runs = results.times[(inputs.label, name)]
        best = min(runs)
        label = f"{name} (baseline)" if name == ONE else name
        rate = inputs.levels / best / 1e6
        print(f"  {label:<34}{best:7.2f}  {rate:11.2f}   {', '.join(f'{t:.2f}' for t in runs)}")
    r = Ratios(
        speedup=results.best(inputs, W1) / results.best(inputs, W2),
        overhead=results.best(inputs, W1) / results.best(inputs, ONE) - 1,
        identical=not any(names for (label, _), names in results.differing.items() if label == inputs.label),
    )
    print(f"  2 workers over 1: {r.speedup:.2f}x (target >= {SPEEDUP_TARGET}): {speedup_verdict(r)}")
    print(
        f"  pipeline overhead, 1 worker over one process: {r.overhead * 100:+.1f} % "
        f"(target <= {OVERHEAD_TARGET * 100:.0f} %): {overhead_verdict(r)}"
    )
    print(f"  outputs byte-identical to the one-process output: {identity_text(results, inputs, reference)}")
    return r


def identity_text(results: Results, inputs: Inputs, reference: Path) -> str:
    mine = {name: diff for (label, name), diff in results.differing.items() if label == inputs.label}
    bad = [f"{name}: {', '.join(sorted(diff))}" for name, diff in mine.items() if diff]
    if bad:
        return f"NO ({'; '.join(bad)})"
    runs = sum(len(times) for (label, _), times in results.times.items() if label == inputs.label)
    return f"yes, every one of the {runs} runs ({describe_outputs(reference)})"


def speedup_verdict(r: Ratios) -> str:
    return verdict(r.speedup >= SPEEDUP_TARGET)


def overhead_verdict(r: Ratios) -> str:
    return verdict(r.overhead <= OVERHEAD_TARGET)


def print_fixed_costs(
    startups: list[float], embedded: list[float], in_process: list[float], same: bool
) -> None:
    e, p = statistics.median(embedded), statistics.median(in_process)
    print("\nfixed costs:")
    print(
        f"  embedded broker start-up: median {statistics.median(startups) * 1000:.0f} ms "
        f"of {len(startups)} starts ({ms(startups)} ms)"
    )
    print(
        f"  retape audit {SAMPLE.relative_to(ROOT)} --out TMP --quiet, wall time, median of {len(embedded)}:"
    )
    print(f"    embedded default ({os.cpu_count()} workers): {e:6.2f} s  ({ms(embedded)} ms)")
    print(f"    --in-process:{'':>17}{p:6.2f} s  ({ms(in_process)} ms)")
    print(
        f"    the default costs {e - p:+.2f} s more on this small job; "
        f"same outputs: {'yes' if same else 'NO'}"
    )


def print_broker_path(results: Results, plain: Inputs, workers: int) -> bool:
    """The data path through the broker; returns whether Redis memory stayed within the bound."""
    runs = results.broker_runs
    best = min(r.seconds for r in runs)
    direct = results.best(plain, W2)
    readers = min(workers, len(plain.files))  # one file per segment here
    bound = WINDOW_BLOCKS * BLOCK_SIZE * readers
    peak = max(r.memory_above_idle for r in runs)
    fed, sent = runs[0].fed, runs[0].sent
    print(
        f"\ninputs through the broker (RETAPE_READ_INPUTS=broker for the workers; plain, {workers} workers):"
    )
    print(
        f"  {best:.2f} s, {plain.levels / best / 1e6:.2f} M updates/s (runs "
        f"{', '.join(f'{r.seconds:.2f}' for r in runs)}): {best / direct:.2f}x the direct-read time "
        f"({direct:.2f} s)"
    )
    print(
        f"  streamed {fed / MB:.1f} MB of input as {sent / MB:.1f} MB of zlib blocks "
        f"({sent / max(fed, 1) * 100:.0f} %); most unread blocks seen on one stream: "
        f"{max(r.peak_unread for r in runs)} (window {WINDOW_BLOCKS})"
    )
    print(
        f"  Redis memory: peak {peak / MIB:.1f} MiB above idle (the highest of {len(runs)} runs, sampled "
        f"every {SAMPLE_EVERY_S * 1000:.0f} ms); bound {bound / MIB:.0f} MiB "
        f"({WINDOW_BLOCKS} blocks x {BLOCK_SIZE // MIB} MiB x {readers} readers): {verdict(peak <= bound)}"
    )
    return peak <= bound


def print_summary(plain: Ratios, packed: Ratios, memory_ok: bool) -> None:
    print(
        f"\ntargets: 2 workers over 1 >= {SPEEDUP_TARGET}: "
        f"plain {plain.speedup:.2f}x {speedup_verdict(plain)}, "
        f"gzip {packed.speedup:.2f}x {speedup_verdict(packed)}; overhead <= {OVERHEAD_TARGET * 100:.0f} %: "
        f"plain {plain.overhead * 100:+.1f} % {overhead_verdict(plain)}, "
        f"gzip {packed.overhead * 100:+.1f} % {overhead_verdict(packed)}; "
        f"identical outputs {verdict(plain.identical and packed.identical)}; "
        f"Redis memory within bound {verdict(memory_ok)}"
    )


# -- one recording across workers ---------------------------------------------------------

ONE_RECORDING_TARGET = 1.7


def one_recording(server: RedisServer, work: Path, repeat: int, size_mb: float = 0, small: int = 0) -> bool:
    """One plain recording (one stream: one segment, cut into chunks for the workers): the
    real capture continued to about ``size_mb`` MB, or ``small`` small messages (the
    ``make bench`` stream of about 8.5 level updates each).  One process, then the pipeline
    with 1, 2 and 4 workers, interleaved; medians, the ratios, and whether every output is
    byte-identical.  Returns the verdict of 2 workers over 1 against its target."""
    folder = work / ("one-recording" if not small else "one-recording-small")
    folder.mkdir()
    path = folder / "btcusdt_20240808.txt"
    if small:
        messages, levels = build_small_messages(path, small)
        what = "small messages"
    else:
        messages, levels, _ = build_capture(copies_for(size_mb, work), path)
        what = "depth messages"
    inputs = Inputs("one recording", folder, (path,), path.stat().st_size, messages, levels)
    print(
        f"\none recording: {path} ({inputs.size / MB:.0f} MB plain, {messages:,} {what}, "
        f"{levels:,} level updates; chunks of {chunking.chunk_bytes() / MB:.0f} MB)",
        flush=True,
    )
    times: dict[str, list[float]] = {}
    differing: set[str] = set()
    reference: Path | None = None
    names = [(ONE, 0), (W1, 1), (W2, 2), ("pipeline, 4 workers", 4)]
    for r in range(repeat):
        for name, workers in names:
            out = work / f"one-{workers}w-{r}"
            run = one_process(inputs, out) if workers == 0 else pipeline(server, inputs, workers, out)
            times.setdefault(name, []).append(run.seconds)
            if reference is None:
                reference = out
            else:
                differing.update(f"{name}: {d}" for d in differences(reference, out))
                shutil.rmtree(out)
        print(f"  round {r + 1}/{repeat}: done", flush=True)
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"  medians of {repeat} interleaved runs:{'seconds':>14}  M updates/s   runs (s)")
    for name, _ in names:
        runs = times[name]
        print(
            f"    {name:<34}{median[name]:7.2f}  {levels / median[name] / 1e6:11.2f}   "
            f"{', '.join(f'{t:.2f}' for t in runs)}"
        )
    two = median[W1] / median[W2]
    four = median[W1] / median["pipeline, 4 workers"]
    overhead = median[W1] / median[ONE] - 1
    print(
        f"  2 workers over 1: {two:.2f}x (target >= {ONE_RECORDING_TARGET}): "
        f"{verdict(two >= ONE_RECORDING_TARGET)}; 4 workers over 1: {four:.2f}x ({os.cpu_count()} CPUs here)"
    )
    print(
        f"  pipeline overhead, 1 worker over one process: {overhead * 100:+.1f} % "
        f"(target <= {OVERHEAD_TARGET * 100:.0f} %): {verdict(overhead <= OVERHEAD_TARGET)}"
    )
    assert reference is not None
    same = "yes, every run" if not differing else f"NO ({'; '.join(sorted(differing))})"
    print(f"  outputs byte-identical to the one-process output: {same} ({describe_outputs(reference)})")
    shutil.rmtree(reference)
    shutil.rmtree(folder)
    return two >= ONE_RECORDING_TARGET and not differing


# -- main --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=float, default=88, help="MB of plain text per capture (default 88)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds of runs, interleaved; the best is kept")
    parser.add_argument(
        "--one-recording-mb",
        type=float,
        default=354,
        help="MB of the one plain recording run with 1, 2 and 4 workers (0: skip; default 354)",
    )
    parser.add_argument(
        "--one-recording-messages",
        type=int,
        default=1_000_000,
        help="small messages of the second recording run with 1, 2 and 4 workers (0: skip; default 1000000)",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="retape-bench-pipeline-"))
    try:
        print(f"retape pipeline benchmark: {os.cpu_count()} CPUs, best of {args.repeat}, runs interleaved")
        plain, packed, copies = build_inputs(work, args.size_mb)
        print_inputs(plain, copies)
        print_inputs(packed, copies)
        with RedisServer(work) as server:
            print(f"broker: a redis-server of its own on {server.url}, no persistence", flush=True)
            results, reference = measure(server, [plain, packed], args.repeat, work)
            if args.one_recording_mb > 0:
                one_recording(server, work, args.repeat, size_mb=args.one_recording_mb)
            if args.one_recording_messages > 0:
                one_recording(server, work, args.repeat, small=args.one_recording_messages)
        plain_ratios = print_matrix(results, plain, reference["plain"])
        gzip_ratios = print_matrix(results, packed, reference["gzip"])
        startups = broker_startups(work)
        embedded, in_process, same = default_command_costs(SAMPLE, work)
        print_fixed_costs(startups, embedded, in_process, same)
        memory_ok = print_broker_path(results, plain, 2)
        print_summary(plain_ratios, gzip_ratios, memory_ok)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the servers, workers and files are gone already (finally blocks)
        sys.stderr.write("\ninterrupted\n")
        sys.exit(130)
