"""The ``retape`` command line (see ``specs/cli-contract.md``).

Every command prints one clear line and exits 2 on a usage error or an unreadable path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import orjson

from shared.auditors import AuditConfig
from shared.errors import (
    BrokerLost,
    BrokerUnreachable,
    InputError,
    JobIncomplete,
    LeaseLost,
    PipelineError,
    RetapeError,
    UsageError,
)
from shared.formats.timestamps import iso_to_us
from shared.jobs import JobPlan, Writer
from shared.manifest import WORKERS_LOG, retape_version

EXIT_OK = 0
EXIT_BELOW_THRESHOLD = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3  # an input was found but not audited (or the command could not finish)
EXIT_INTERRUPTED = 130
MAX_AT_US = 253402300800 * 1_000_000  # 10000-01-01T00:00:00Z


class _HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default where its help does not say it already (flags and options
    without a default show none)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if default is None or default is False or default == argparse.SUPPRESS:
            return text
        if "default" in text or not action.option_strings:
            return text
        return f"{text} (default: {default})"


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line and exit 2; --help shows every option's default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"retape: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a non-negative number: {text!r}")
    return value


def parse_time(text: str) -> int:
    """ISO-8601 (UTC, ``Z``) or integer epoch microseconds, up to the year 9999."""
    if text.isdigit() and len(text) <= 18:
        value = int(text)
    else:
        try:
            value = iso_to_us(text.encode())
        except (ValueError, UnicodeEncodeError, OverflowError):
            value = -1
    if not 0 <= value < MAX_AT_US:
        raise UsageError(f"--at: not an ISO-8601 UTC time or epoch microseconds: {text!r}")
    return value


def _job_options(parser: argparse.ArgumentParser, in_process: str) -> None:
    """How a command runs its job: on a broker's workers, local ones, or in this process."""
    parser.add_argument("--broker", metavar="URL", help="Redis URL of the broker (default REDIS_URL)")
    parser.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="local worker processes (default: the CPU count without a broker, none with one)",
    )
    parser.add_argument(
        "--timeout",
        type=_non_negative_float,
        metavar="S",
        help="give up after S seconds (exit 3; what finished is written, the rest marked not done)",
    )
    parser.add_argument("--in-process", action="store_true", help=f"no broker and no workers: {in_process}")
    parser.add_argument(
        "--no-progress", action="store_true", help="print no progress (the summary is still printed)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="retape", description="Rebuild and audit historical crypto-exchange market data.")
    parser.add_argument("--version", action="version", version=f"retape {retape_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    audit = sub.add_parser("audit", help="audit captures: faults, integrity scores, rebuilt books")
    audit.add_argument("paths", nargs="+", metavar="PATH", help="capture files or directories (recursed)")
    audit.add_argument(
        "--out", default="retape-out", metavar="DIR", help="output directory (default ./retape-out)"
    )
    _audit_options(audit)
    audit.add_argument(
        "--fail-under",
        type=_non_negative_float,
        metavar="SCORE",
        help="exit 1 when a stream's integrity score is below SCORE",
    )
    _job_options(audit, "run the engine in this process (debugging, profiling)")
    audit.add_argument("--quiet", action="store_true", help="print nothing but errors")
    audit.add_argument("--verbose", action="store_true", help="list every stream in the summary")

    book = sub.add_parser("book", help="print the rebuilt book of one stream at a point in time")
    book.add_argument("paths", nargs="+", metavar="PATH")
    book.add_argument("--exchange", required=True, help="Tardis exchange id, e.g. binance-futures")
    book.add_argument("--symbol", required=True)
    book.add_argument("--at", required=True, help="ISO-8601 UTC time or epoch microseconds")
    book.add_argument("--depth", type=_positive_int, default=25)
    book.add_argument("--reorder-window", type=_positive_int, default=64, metavar="N")

    worker = sub.add_parser("worker", help="run a worker attached to the broker")
    worker.add_argument("--queues", help="comma-separated queues (default all)")
    worker.add_argument(
        "--concurrency", type=_positive_int, default=1, metavar="N", help="worker processes of this worker"
    )
    worker.add_argument("--broker", help="Redis URL (default REDIS_URL)")

    produce = sub.add_parser(
        "produce", help="submit inputs as a job and stream them to the workers (what cron runs)"
    )
    produce.add_argument("paths", nargs="+", metavar="PATH")
    produce.add_argument(
        "--out", required=True, metavar="DIR", help="where the aggregator writes the results"
    )
    produce.add_argument("--broker", help="Redis URL (default REDIS_URL)")
    produce.add_argument(
        "--timeout", type=_non_negative_float, metavar="S", help="give up after S seconds (exit 3)"
    )
    _audit_options(produce)

    status = sub.add_parser("status", help="print a job's progress as JSON")
    status.add_argument("job")
    status.add_argument("--broker", help="Redis URL (default REDIS_URL)")

    compare = sub.add_parser(
        "compare",
        help="compare two recordings of the same streams (messages, gaps, receive times, books)",
        description="Compare two recordings of the same streams, matched by exchange, symbol and channel, "
        "and by id where the venue numbers its messages (else by content and exchange time). Prints "
        "JSON, or writes DIR/compare.json and DIR/compare.html with --out. Exit 0; 1 when A and B share "
        "no stream (the output is still written); 2 on a usage error or an unreadable path.",
    )
    compare.add_argument(
        "a", metavar="A", help="the first recording: a capture file or a directory (recursed)"
    )
    compare.add_argument("b", metavar="B", help="the second recording")
    compare.add_argument(
        "--out", metavar="DIR", help="write DIR/compare.json and DIR/compare.html instead of printing JSON"
    )
    compare.add_argument(
        "--depth",
        type=_positive_int,
        default=10,
        metavar="N",
        help="book levels compared per side (default 10)",
    )

    checksum = sub.add_parser("checksum", help="print the checksum an exchange would send for a book")
    checksum.add_argument("--exchange", required=True, help="okex*, bitfinex, kraken or ftx*")
    checksum.add_argument("file", nargs="?", metavar="FILE", help="JSON book (default: standard input)")

    verify = sub.add_parser(
        "verify",
        help="check an output directory: records chain, MANIFEST, every file, signature, inputs",
        description="Exit 0 when everything holds, 1 with one line naming the first broken thing.",
    )
    verify.add_argument("dir", metavar="DIR", help="an output directory of retape audit or produce")
    verify.add_argument(
        "--inputs",
        nargs="+",
        action="extend",
        metavar="PATH",
        help="check the SHA-256 of the MANIFEST's inputs found at or under these files or directories",
    )
    ledger = sub.add_parser(
        "ledger",
        help="rebuild account ledgers from fragments (exports, API logs, chain records, notes)",
        description="Writes ledger.jsonl and ledger.csv (every field with its source, confidence and "
        "fragments), balances.json at --cutoff, unresolved.jsonl, report.json and the audit records. "
        "A fragment's account is its account field, else the name of the directory holding its file.",
    )
    ledger.add_argument("paths", nargs="+", metavar="PATH", help="fragment files or directories (recursed)")
    ledger.add_argument(
        "--out", default="retape-ledger", metavar="DIR", help="output directory (default ./retape-ledger)"
    )
    ledger.add_argument(
        "--cutoff",
        metavar="T",
        help="balances as of this instant (ISO-8601 with a zone, or epoch microseconds; default "
        "2022-11-11T00:00:00-05:00, the start of FTX's petition day in the court's zone)",
    )
    _job_options(ledger, "read the fragments and ask the LLM from this process")
    ledger.add_argument("--quiet", action="store_true", help="print nothing but errors")

    serve = sub.add_parser(
        "serve-archive",
        help="serve a directory of captures through the Tardis-compatible replay API",
        description="Serves GET /v1/data-feeds/{exchange}?from=&offset=&filters= (one minute of gzip "
        "NDJSON: '<ISO-8601 receive time> <raw JSON>' lines, an empty line for a disconnect) from the "
        "captures under DIR, for --replay-source on other machines. Runs until interrupted.",
    )
    serve.add_argument("dir", metavar="DIR", help="a directory of captures (recursed)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=_positive_int, default=8765, metavar="N", help="port (default 8765; 0: any free one)"
    )

    verify.add_argument(
        "--public-key",
        metavar="K",
        help="Ed25519 public key (a PEM file, or PEM text) the MANIFEST must be signed with",
    )
    return parser


def _audit_options(parser: argparse.ArgumentParser) -> None:
    """What changes the audit itself (and so the job id)."""
    parser.add_argument(
        "--drift-ms", type=_non_negative_float, default=100.0, help="timestamp drift threshold"
    )
    parser.add_argument(
        "--reorder-window",
        type=_positive_int,
        default=64,
        metavar="N",
        help="messages held back to repair reordering (default 64)",
    )
    parser.add_argument(
        "--book-interval",
        type=_positive_int,
        default=60_000,
        metavar="MS",
        help="write the rebuilt book every MS of receive time (0: never; default 60000)",
    )
    parser.add_argument(
        "--book-depth", type=_positive_int, default=25, metavar="N", help="levels per side in book CSVs"
    )
    parser.add_argument(
        "--replay-source",
        action="append",
        default=[],
        metavar="URL",
        help="fill gaps from this source: a Tardis-compatible API URL (key in RETAPE_TARDIS_API_KEY) "
        "or a directory of captures; repeatable, tried in order; options after '#': rps, weight, "
        "tries, backoff, breaker, cooldown",
    )


def audit_config(args: argparse.Namespace) -> AuditConfig:
    from shared.replay.sources import canonical_source

    return AuditConfig(
        drift_ms=args.drift_ms,
        reorder_window=args.reorder_window,
        book_interval_us=args.book_interval * 1000,
        book_depth=args.book_depth,
        replay_sources=tuple(canonical_source(s) for s in args.replay_source),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; whatever happens, one clear line on standard error, never a traceback."""
    args = build_parser().parse_args(argv)
    previous = _terminate_as_interrupt()
    try:
        return COMMANDS[args.command](args)
    except (UsageError, InputError, BrokerUnreachable) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except JobIncomplete as exc:
        _error(str(exc))
        return EXIT_INCOMPLETE
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (`retape ... | head`): nothing left to say.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except RetapeError as exc:
        _error(str(exc))
        return EXIT_INCOMPLETE
    except Exception as exc:
        where = _save_traceback()
        _error(f"internal error: {type(exc).__name__}: {exc} (details in {where}; please report it)")
        return EXIT_INCOMPLETE
    finally:
        signal.signal(signal.SIGTERM, previous)


def _error(message: str) -> None:
    sys.stderr.write(f"retape: error: {message}\n" if message != "interrupted" else "retape: interrupted\n")
    sys.stderr.flush()


def _terminate_as_interrupt() -> Any:
    """SIGTERM stops the command as Ctrl-C does: local workers and broker are stopped."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _save_traceback() -> str:
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="retape-crash-", suffix=".txt")
    with os.fdopen(fd, "w") as fh:
        traceback.print_exc(file=fh)
    return path


def _check_paths(paths: Sequence[str]) -> None:
    for p in paths:
        if not os.path.lexists(p):
            raise InputError(_shown(p), "no such file or directory")
        if not os.path.exists(p):
            raise InputError(_shown(p), "a broken symbolic link")
        if not os.access(p, os.R_OK):
            raise InputError(_shown(p), "not readable (permission denied)")


def _shown(path: str) -> str:
    """A path as it can be printed (a name that is not valid UTF-8 is escaped)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def cmd_audit(args: argparse.Namespace) -> int:
    from shared.outdir import OutputDir

    _check_paths(args.paths)
    cfg = audit_config(args)
    from shared.signing import signing_key

    signing_key()  # a RETAPE_SIGNING_KEY that cannot be read is a usage error before any work
    url = _check_job_options(args)
    out = os.path.abspath(args.out)
    folder = OutputDir(out)
    folder.check_writable()
    with folder.lock():
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(out, WORKERS_LOG))  # an earlier run's: it spoke of that run
        if args.in_process:
            from dataclasses import asdict

            from shared.engine import Engine
            from shared.report import write_outputs

            if cfg.replay_sources:
                from shared.audit_job import run_in_process

                report = run_in_process(list(args.paths), cfg, out)
            else:
                outcome = Engine(cfg).run(args.paths)
                outcome.settings = asdict(cfg)
                report = write_outputs(outcome, out)
        else:
            from shared.audit_job import plan_audit

            report = _distributed_job(args, url, out, lambda writer: plan_audit(args.paths, cfg, out, writer))
    if not args.quiet:
        print_summary(report, args.out, verbose=args.verbose)
    missing = _not_audited(report)
    if missing:
        for entry in missing:
            reason = str(entry.get("error") or "unknown reason").removeprefix("not audited: ")
            sys.stderr.write(f"retape: not audited: {entry['path']}: {reason}\n")
        sys.stderr.write(
            f"retape: {len(missing)} input(s) were not audited; report.json marks them (exit status 3)\n"
        )
        return EXIT_INCOMPLETE
    if args.fail_under is not None:
        below = [s for s in report["streams"] if s["integrity_score"] < args.fail_under]
        # Damage is never clean: a stream whose input was cut off or held unreadable lines fails
        # the threshold whatever its score.
        damaged = [s for s in report["streams"] if any((s.get("input_damage") or {}).values())]
        if below or damaged:
            if not args.quiet:
                if below:
                    print(f"{len(below)} stream(s) score below {args.fail_under:g}")
                if damaged:
                    print(f"{len(damaged)} stream(s) come from damaged inputs (cut off or unreadable lines)")
            return EXIT_BELOW_THRESHOLD
    return EXIT_OK


def _not_audited(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in report["inputs"] if i.get("audited") is False]


def _check_job_options(args: argparse.Namespace) -> str | None:
    """The broker URL to run on (None: an embedded one), or a usage error."""
    url = args.broker or os.environ.get("REDIS_URL")
    if args.in_process and (args.broker or args.workers):
        raise UsageError("--in-process runs no broker and no workers: drop --broker/--workers")
    return url or None


def _distributed_job(
    args: argparse.Namespace,
    url: str | None,
    out: str,
    planner: Callable[[Writer], tuple[str, JobPlan]],
) -> dict[str, Any]:
    """Run a job (``planner`` plans it): on ``url`` (its workers, plus ``--workers`` local
    ones), or on an embedded broker with local workers (the CPU count unless ``--workers``)."""
    from producers.local import EmbeddedBroker, LocalWorkers, RunDir
    from producers.run import Submitter, Waiting, connect

    embedded = not url
    count = (
        (args.workers if args.workers is not None else (os.cpu_count() or 1))
        if embedded
        else (args.workers or 0)
    )
    run_dir = RunDir()
    workers: LocalWorkers | None = None
    broker: EmbeddedBroker | None = None
    trouble = True  # the workers' log is kept unless the job went through cleanly
    try:
        if embedded:
            broker = EmbeddedBroker(run_dir.broker_dir).start()
            url = broker.url
        assert url is not None
        client = connect(url)
        if count:
            workers = LocalWorkers(url, count, run_dir.workers_log, embedded=embedded).start()
        job, plan = planner(Writer.SUBMITTER)
        how = Waiting(
            progress=not (args.no_progress or args.quiet),
            timeout_s=args.timeout,
            alive=workers.check if workers is not None else None,
        )
        report, trouble = _run_job(Submitter(client, url, job, plan), how, out)
        return report
    finally:
        if workers is not None:
            workers.stop(fast=embedded or trouble)
        if broker is not None:
            broker.stop()
        if trouble and workers is not None and os.path.exists(run_dir.workers_log):
            kept = run_dir.keep_log(os.path.join(out, WORKERS_LOG))
            if kept:
                sys.stderr.write(f"retape: the local workers' log is kept in {kept}\n")
        run_dir.remove()


def _run_job(submitter: Any, how: Any, out: str) -> tuple[dict[str, Any], bool]:
    """Submit, wait, write the outputs; returns the report and whether anything went wrong in
    the pipeline (a dead letter, a timeout, dead workers, a lost broker)."""
    import redis

    from producers.run import lost, write_not_audited
    from shared.jobflow import Outcome
    from shared.jobs import Field, Writer

    try:
        submission = submitter.submit_when_free(Writer.SUBMITTER)
        if submission.outcome is Outcome.SERVED_ELSEWHERE:
            raise UsageError(
                f"job {submitter.job} is being run by another retape command (same inputs, options and --out)"
            )
        try:
            submitter.wait_for_segments(how)
            report = submitter.collect(out)
            trouble = submitter.store.count(Field.DEAD) > 0
        except (JobIncomplete, PipelineError) as exc:
            if isinstance(exc, (BrokerLost, LeaseLost)):
                raise
            report, trouble = submitter.collect_partial(out, str(exc)), True
        submitter.release()
        return report, trouble
    except (redis.ConnectionError, redis.TimeoutError, BrokerLost) as exc:
        problem = exc if isinstance(exc, BrokerLost) else lost(submitter.url, submitter.job, exc)
        _error(str(problem))
        return write_not_audited(submitter.plan, out, "the broker was lost while the job ran"), True
    except LeaseLost:
        raise  # the job goes on with the producer that took it over: leave it be
    except BaseException:
        _cancel_quietly(submitter)  # Ctrl-C, or a failure of our own: queued tasks do nothing
        raise


def _cancel_quietly(submitter: Any) -> None:
    """Ctrl-C or an unexpected error: give the job up (queued tasks then do nothing), if the
    broker answers within half a second."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from shared.jobstore import JobStore

    with contextlib.suppress(Exception):
        quick = redis.Redis.from_url(
            submitter.url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )
        store = JobStore(quick, submitter.job, submitter.store.epoch)
        store.cancel(submitter.owner)
        store.release_lease(submitter.owner)


SUMMARY_ROWS = 25


def print_summary(report: dict[str, Any], out_dir: str, verbose: bool = False) -> None:
    """A readable summary: totals, what was ignored and why, damaged inputs, then the streams
    (the worst first when there are many)."""
    inputs = report["inputs"]
    lines_total = sum(i["lines"] for i in inputs)
    ignored_total = sum(i.get("ignored", 0) for i in inputs)
    print(
        f"retape audit: {len(inputs)} input file(s), {lines_total} lines: "
        f"{lines_total - ignored_total - report['malformed']} read as market data, "
        f"{ignored_total} ignored, {report['malformed']} malformed"
    )
    why: dict[str, int] = {}
    for i in inputs:
        for reason, n in i.get("ignored_why", {}).items():
            why[reason] = why.get(reason, 0) + n
    if why:
        top = sorted(why.items(), key=lambda kv: (-kv[1], kv[0]))
        listed = ", ".join(f"{reason} {n}" for reason, n in top[:6])
        more = f", and {len(top) - 6} more kinds" if len(top) > 6 else ""
        print(f"  ignored: {listed}{more}")
    for i in inputs:
        print_input_problems(i)
    streams = report["streams"]
    if not streams:
        print("  no market-data streams found")
        print(f"results in {out_dir}/")
        return
    exchanges = sorted({s["exchange"] for s in streams})
    by_channel = {c: sum(1 for s in streams if s["channel"] == c) for c in ("book", "trades", "funding")}
    channels = ", ".join(f"{n} {c}" for c, n in by_channel.items() if n)
    print(f"{len(streams)} streams ({channels}) on {len(exchanges)} exchange(s): {', '.join(exchanges)}")
    times = sorted(t for s in streams for t in (s.get("first_time"), s.get("last_time")) if t)
    if times:
        print(f"receive time: {times[0]} to {times[-1]}")
    totals = {k: sum(s["faults"][k] for s in streams) for k in streams[0]["faults"]}
    found = ", ".join(f"{k} {v}" for k, v in totals.items() if v)
    print(f"faults: {found or 'none'}")
    shown = streams
    if not verbose and len(streams) > SUMMARY_ROWS:
        faulty = [s for s in streams if stream_problems(s)]
        shown = sorted(faulty, key=lambda s: (s["integrity_score"], s["exchange"], s["symbol"]))[
            :SUMMARY_ROWS
        ]
        print(
            f"{len(faulty)} stream(s) with faults; the {len(shown)} lowest scores:" if faulty else "all clean"
        )
    width = max((len(f"{s['exchange']} {s['symbol']} {s['channel']}") for s in shown), default=20)
    for s in shown:
        name = f"{s['exchange']} {s['symbol']} {s['channel']}"
        score = s["integrity_score"]
        what = stream_problems(s) or "clean"
        print(f"  {name:<{width}}  {s['messages']:>9} msgs  score {score:6.2f}  {what}")
    if shown is not streams:
        print(f"  (every stream: {out_dir}/report.json, or --verbose)")
    print(f"results in {out_dir}/ (report.html, report.json, audit/records.jsonl, audit/MANIFEST, books/)")


def print_input_problems(i: dict[str, Any]) -> None:
    """One line for an input that was not audited, is not a capture, is damaged, or held no
    market data retape recognised."""
    if i.get("audited") is False:
        reason = str(i.get("error") or "unknown reason").removeprefix("not audited: ")
        print(f"  not audited: {i['path']}: {reason}")
    elif i.get("error"):
        print(f"  skipped {i['path']}: {i['error']}")
    elif i.get("cut_off"):
        print(f"  cut off: {i['path']} ends early ({i['malformed']} line(s) could not be read)")
    elif i.get("malformed"):
        print(f"  damaged: {i['path']}: {i['malformed']} line(s) could not be read")
    elif i.get("lines") and not i.get("streams"):
        print(
            f"  no market data recognised in {i['path']} ({i['lines']} lines, {i.get('ignored', 0)} ignored)"
        )


def stream_problems(s: dict[str, Any]) -> str:
    """What is wrong with a stream, in a few words ('' when nothing is)."""
    parts = [f"{k} {v}" for k, v in s["faults"].items() if v]
    damage = s.get("input_damage") or {}
    if damage.get("malformed_lines") or damage.get("cut_off"):
        bits = []
        if damage.get("malformed_lines"):
            bits.append(f"{damage['malformed_lines']} unreadable lines")
        if damage.get("cut_off"):
            bits.append("cut off")
        parts.append(f"input damaged ({', '.join(bits)})")
    faulty_unsafe = sum(v for cause, v in (s.get("unsafe_by_cause") or {}).items() if cause != "no_snapshot")
    if faulty_unsafe > 0:
        parts.append(f"book unsafe {faulty_unsafe:.1f} s")
    return ", ".join(parts)


def cmd_book(args: argparse.Namespace) -> int:
    from shared.engine import StreamNotFound, rebuild_book

    _check_paths(args.paths)
    at = parse_time(args.at)
    cfg = AuditConfig(reorder_window=args.reorder_window)
    try:
        result = rebuild_book(args.paths, args.exchange, args.symbol, at, depth=args.depth, cfg=cfg)
    except StreamNotFound as exc:
        raise UsageError(str(exc)) from None
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    if result.get("note"):
        sys.stderr.write(f"retape: note: --at {args.at} is {result['note']}\n")
    return EXIT_OK


def _broker(args: argparse.Namespace) -> str:
    url = args.broker or os.environ.get("REDIS_URL")
    if not url:
        raise UsageError("no broker: give --broker URL or set REDIS_URL")
    return str(url)


def cmd_worker(args: argparse.Namespace) -> int:
    """Become a Celery worker of the workers' app (``celery -A workers.app worker``): exec'd,
    so signals (a warm shutdown on SIGTERM) reach Celery itself."""
    from producers.run import connect
    from shared.queues import parse_queues

    try:
        queues = parse_queues(args.queues)
    except ValueError as exc:
        raise UsageError(f"--queues: {exc}") from None
    url = _broker(args)
    connect(url)  # a clear error now rather than Celery's retries
    argv = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--queues", ",".join(queues)]
    argv += ["--concurrency", str(args.concurrency), "--loglevel", "INFO"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, {**os.environ, "REDIS_URL": url})
    return EXIT_OK  # not reached


def cmd_produce(args: argparse.Namespace) -> int:
    import redis

    from producers.run import Submitter, Waiting, connect, lost
    from shared.audit_job import plan_audit
    from shared.jobflow import Outcome
    from shared.jobs import Writer
    from shared.outdir import OutputDir

    _check_paths(args.paths)
    url = _broker(args)
    out = os.path.abspath(args.out)
    OutputDir(out).check_writable()
    client = connect(url)
    job, plan = plan_audit(args.paths, audit_config(args), out, Writer.AGGREGATOR)
    print(job, flush=True)
    submitter = Submitter(client, url, job, plan)
    try:
        submission = submitter.submit(Writer.AGGREGATOR, rerun_done=not _outputs_present(out))
        if submission.outcome is Outcome.DONE:
            sys.stderr.write(
                f"retape: job {job} was already done and its outputs are in {out}: nothing new\n"
            )
            return EXIT_OK
        if submission.outcome is Outcome.SERVED_ELSEWHERE:
            sys.stderr.write(f"retape: job {job} is being served by another producer: nothing new\n")
            return EXIT_OK
        if submission.outcome is Outcome.RESUMED:
            sys.stderr.write(f"retape: job {job} was left unfinished by its producer: taking it over\n")
        # The workers read the inputs through the broker (or from this disk): serve them
        # until every segment is finished; the aggregator then writes the outputs.
        try:
            submitter.wait_for_segments(Waiting(timeout_s=args.timeout))
        except JobIncomplete:
            submitter.cancel()
            raise
        finally:
            submitter.release()
        return _aggregated(submitter, job, out)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise lost(url, job, exc) from None


AGGREGATOR_WAIT_S = 300.0


def _aggregated(submitter: Any, job: str, out: str) -> int:
    """Every segment is finished: wait a while for the aggregator to write the outputs."""
    from shared.jobs import Field, JobState

    state = submitter.wait_for_outputs(AGGREGATOR_WAIT_S)
    if state is JobState.FAILED:
        why = submitter.store.get(Field.ERROR) or "see retape status"
        raise JobIncomplete(f"job {job}: the aggregator could not write the outputs to {out}: {why}")
    if state is None:
        sys.stderr.write(
            f"retape: job {job}: every segment is finished; the aggregator has not written {out} after "
            f"{AGGREGATOR_WAIT_S:g} s (is a worker serving the aggregate queue?): see retape status {job}\n"
        )
    return EXIT_OK


def _outputs_present(out: str) -> bool:
    from shared.report import AUDIT_DIR, MANIFEST_NAME, REPORT_NAME

    return os.path.isfile(os.path.join(out, REPORT_NAME)) and os.path.isfile(
        os.path.join(out, AUDIT_DIR, MANIFEST_NAME)
    )


def cmd_status(args: argparse.Namespace) -> int:
    import redis

    from producers.run import connect
    from shared.jobstore import JobStore

    client = connect(_broker(args))
    try:
        got = JobStore(client, args.job).status()
    except redis.RedisError as exc:
        raise UsageError(f"broker unreachable: {exc}") from None
    sys.stdout.write(orjson.dumps(got).decode() + "\n")
    if got["state"] == "unknown":
        _error(f"no job {args.job} on this broker (never submitted, or finished more than 24 hours ago)")
        return EXIT_BELOW_THRESHOLD
    return EXIT_OK


def cmd_checksum(args: argparse.Namespace) -> int:
    from shared.checksums import book_checksum

    if args.file:
        _check_paths([args.file])
        with open(args.file, "rb") as fh:
            data = fh.read()
    else:
        data = sys.stdin.buffer.read()
    try:
        # Numbers keep their text ("0.10000000" must not become 0.1: checksums hash the text).
        book = json.loads(data, parse_float=str, parse_int=str)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"the book is not valid JSON: {exc}") from None
    if (
        not isinstance(book, dict)
        or not isinstance(book.get("bids", []), list)
        or not isinstance(book.get("asks", []), list)
    ):
        raise UsageError('the book must be {"bids": [[price, qty], ...], "asks": [...]}')
    print(book_checksum(args.exchange, book.get("bids", []), book.get("asks", [])))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from shared.signing import public_key
    from shared.verify import verify

    key = public_key(args.public_key) if args.public_key is not None else None
    if args.inputs:
        _check_paths([p for p in args.inputs if os.path.lexists(p)])
    verdict = verify(args.dir, args.inputs, key)
    print(f"retape verify: {'OK' if verdict.ok else 'FAILED'}: {verdict.message}")
    return EXIT_OK if verdict.ok else 1


EXIT_NOTHING_COMPARED = 1  # compare: A and B share no stream


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare recordings A and B; exit 1 (after writing the output) when they share no stream."""
    from shared.compare import CompareConfig, compare, dumps

    _check_paths([args.a, args.b])
    if args.depth < 1:
        raise UsageError("--depth: must be at least 1")
    out = os.path.abspath(args.out) if args.out else None
    if out is not None:
        from shared.outdir import OutputDir

        OutputDir(out).check_writable()
    report = compare([args.a], [args.b], CompareConfig(depth=args.depth))
    data = dumps(report)
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        from shared.compare_html import render
        from shared.outdir import OutputDir, atomic_write

        with OutputDir(out).lock():
            atomic_write(os.path.join(out, "compare.json"), data)
            atomic_write(os.path.join(out, "compare.html"), render(report).encode())
        both = len(report["streams"])
        print(f"retape compare: {both} stream(s) in both; see {args.out}/compare.json and compare.html")
    if not report["streams"]:
        sys.stderr.write(
            f"retape: A and B share no stream (A has {len(report['only_in_a'])} stream(s), B has "
            f"{len(report['only_in_b'])}): nothing was compared\n"
        )
        return EXIT_NOTHING_COMPARED
    return EXIT_OK


def cmd_ledger(args: argparse.Namespace) -> int:
    from shared.ledger.balances import FTX_PETITION_CUTOFF_US
    from shared.ledger.llm import Settings
    from shared.ledger.values import parse_time
    from shared.ledger_job import plan_ledger
    from shared.outdir import OutputDir
    from shared.signing import signing_key

    _check_paths(args.paths)
    cutoff = FTX_PETITION_CUTOFF_US
    if args.cutoff is not None:
        when = parse_time(args.cutoff)
        if when is None:
            raise UsageError(f"--cutoff: not an ISO-8601 time or epoch microseconds: {args.cutoff!r}")
        cutoff = when.us
    signing_key()
    llm = Settings.from_env()
    url = _check_job_options(args)
    out = os.path.abspath(args.out)
    folder = OutputDir(out)
    folder.check_writable()
    with folder.lock():
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(out, WORKERS_LOG))

        def planner(writer: Writer) -> tuple[str, JobPlan]:
            return plan_ledger(list(args.paths), cutoff, out, writer, llm)

        if args.in_process:
            from shared.jobs import run_inline
            from shared.ledger_job import KIND

            report = run_inline(KIND, planner(Writer.SUBMITTER)[1], out)
        else:
            report = _distributed_job(args, url, out, planner)
    if not args.quiet:
        unresolved = sum(report["unresolved"].values())
        print(
            f"{report['transactions']} transactions in {report['accounts']} account(s); balances at "
            f"{report['cutoff']}; {unresolved} item(s) unresolved (unresolved.jsonl); "
            f"{report['conflicting_fields']} field(s) with conflicting sources"
        )
        usage = report["llm"]
        if usage["enabled"]:
            print(
                f"LLM: {usage['requests']} request(s) sent, {usage['cached']} answer(s) from the cache, "
                f"{usage['tokens']['prompt'] + usage['tokens']['completion']} tokens, {usage['cost_usd']} USD"
            )
        print(
            f"results in {args.out}/ (ledger.jsonl, ledger.csv, balances.json, unresolved.jsonl, "
            "report.json, audit/)"
        )
    unread = [i for i in report["inputs"] if i.get("error")]
    for entry in unread:
        sys.stderr.write(f"retape: not read: {entry['path']}: {entry['error']}\n")
    if unread:
        sys.stderr.write(
            f"retape: {len(unread)} input(s) were not read; report.json and unresolved.jsonl mark them "
            "(exit status 3)\n"
        )
        return EXIT_INCOMPLETE
    return EXIT_OK


def cmd_serve_archive(args: argparse.Namespace) -> int:
    from producers.archive_server import serve

    if not os.path.isdir(args.dir):
        raise InputError(_shown(args.dir), "not a directory")
    if not os.access(args.dir, os.R_OK | os.X_OK):
        raise InputError(_shown(args.dir), "not readable (permission denied)")
    return serve(args.dir, args.host, args.port)


COMMANDS = {
    "audit": cmd_audit,
    "book": cmd_book,
    "checksum": cmd_checksum,
    "compare": cmd_compare,
    "worker": cmd_worker,
    "produce": cmd_produce,
    "status": cmd_status,
    "verify": cmd_verify,
    "serve-archive": cmd_serve_archive,
    "ledger": cmd_ledger,
}


if __name__ == "__main__":
    raise SystemExit(main())
