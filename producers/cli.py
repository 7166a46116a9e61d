"""The ``retape`` command line (see ``specs/cli-contract.md``).

Every command prints one clear line and exits 2 on a usage error or an unreadable path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import orjson

from shared.auditors import AuditConfig
from shared.errors import InputError, RetapeError, UsageError
from shared.formats.timestamps import iso_to_us

EXIT_OK = 0
EXIT_BELOW_THRESHOLD = 1
EXIT_USAGE = 2
MAX_AT_US = 253402300800 * 1_000_000  # 10000-01-01T00:00:00Z


class _Parser(argparse.ArgumentParser):
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="retape", description="Rebuild and audit historical crypto-exchange market data.")
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
    audit.add_argument("--broker", metavar="URL", help="Redis URL of the broker (default REDIS_URL)")
    audit.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="local worker processes (default: the CPU count without a broker, none with one)",
    )
    audit.add_argument(
        "--in-process",
        action="store_true",
        help="no broker and no workers: run the engine in this process (debugging, profiling)",
    )
    audit.add_argument(
        "--no-progress", action="store_true", help="print no progress (the summary is still printed)"
    )
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
    worker.add_argument("--concurrency", type=_positive_int, default=1, metavar="N")
    worker.add_argument("--broker", help="Redis URL (default REDIS_URL)")

    produce = sub.add_parser(
        "produce", help="submit inputs as a job and stream them to the workers (what cron runs)"
    )
    produce.add_argument("paths", nargs="+", metavar="PATH")
    produce.add_argument(
        "--out", required=True, metavar="DIR", help="where the aggregator writes the results"
    )
    produce.add_argument("--broker", help="Redis URL (default REDIS_URL)")
    _audit_options(produce)

    status = sub.add_parser("status", help="print a job's progress as JSON")
    status.add_argument("job")
    status.add_argument("--broker", help="Redis URL (default REDIS_URL)")

    checksum = sub.add_parser("checksum", help="print the checksum an exchange would send for a book")
    checksum.add_argument("--exchange", required=True, help="okex*, bitfinex, kraken or ftx*")
    checksum.add_argument("file", nargs="?", metavar="FILE", help="JSON book (default: standard input)")
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


def _config(args: argparse.Namespace) -> AuditConfig:
    return AuditConfig(
        drift_ms=args.drift_ms,
        reorder_window=args.reorder_window,
        book_interval_us=args.book_interval * 1000,
        book_depth=args.book_depth,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "audit":
            return cmd_audit(args)
        if args.command == "book":
            return cmd_book(args)
        if args.command == "checksum":
            return cmd_checksum(args)
        if args.command == "worker":
            return cmd_worker(args)
        if args.command == "produce":
            return cmd_produce(args)
        if args.command == "status":
            return cmd_status(args)
    except (UsageError, InputError) as exc:
        print(f"retape: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RetapeError as exc:
        print(f"retape: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("retape: interrupted", file=sys.stderr)
        return 130
    return EXIT_USAGE


def _check_paths(paths: Sequence[str]) -> None:
    for p in paths:
        if not os.path.exists(p):
            raise InputError(p, "no such file or directory")
        if not os.access(p, os.R_OK):
            raise InputError(p, "not readable")


def cmd_audit(args: argparse.Namespace) -> int:
    from shared.report import write_outputs

    _check_paths(args.paths)
    cfg = _config(args)
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {args.out}: cannot create ({exc.strerror})") from None
    url = args.broker or os.environ.get("REDIS_URL")
    if args.in_process:
        if args.broker or args.workers:
            raise UsageError("--in-process runs no broker and no workers: drop --broker/--workers")
        from shared.engine import Engine

        report = write_outputs(Engine(cfg).run(args.paths), args.out)
    else:
        if not url and args.workers == 0:
            raise UsageError("--workers 0 without a broker: nothing would run the job (see --in-process)")
        report = _distributed_audit(args, cfg, url)
    if not args.quiet:
        print_summary(report, args.out, verbose=args.verbose)
    if args.fail_under is not None:
        below = [s for s in report["streams"] if s["integrity_score"] < args.fail_under]
        if below:
            if not args.quiet:
                print(f"{len(below)} stream(s) score below {args.fail_under:g}")
            return EXIT_BELOW_THRESHOLD
    return EXIT_OK


def _distributed_audit(args: argparse.Namespace, cfg: AuditConfig, url: str | None) -> dict[str, Any]:
    """Run the audit as a job: on ``url`` (its workers, plus ``--workers`` local ones), or on
    an embedded broker with local workers (the CPU count unless ``--workers``)."""
    from contextlib import ExitStack

    from producers.local import EmbeddedBroker, LocalWorkers
    from producers.run import run_job

    out = os.path.abspath(args.out)
    progress = not (args.no_progress or args.quiet)
    with ExitStack() as stack:
        if not url:
            url = stack.enter_context(EmbeddedBroker()).url
            count = args.workers if args.workers is not None else (os.cpu_count() or 1)
        else:
            count = args.workers or 0
        workers = stack.enter_context(LocalWorkers(url, count)) if count else None
        run_job(url, args.paths, cfg, out, progress, alive=workers.check if workers else None)
    with open(os.path.join(out, "report.json"), "rb") as fh:
        report: dict[str, Any] = orjson.loads(fh.read())
    return report


SUMMARY_ROWS = 25


def print_summary(report: dict[str, Any], out_dir: str, verbose: bool = False) -> None:
    """A readable summary: totals, then the streams (the worst first when there are many)."""
    inputs = report["inputs"]
    lines_total = sum(i["lines"] for i in inputs)
    print(f"retape audit: {len(inputs)} input file(s), {lines_total} lines, {report['malformed']} malformed")
    for i in inputs:
        if i.get("error"):
            print(f"  skipped {i['path']}: {i['error']}")
    streams = report["streams"]
    if not streams:
        print("  no market-data streams found")
        print(f"results in {out_dir}/")
        return
    exchanges = sorted({s["exchange"] for s in streams})
    by_channel = {c: sum(1 for s in streams if s["channel"] == c) for c in ("book", "trades", "funding")}
    channels = ", ".join(f"{n} {c}" for c, n in by_channel.items() if n)
    print(f"{len(streams)} streams ({channels}) on {len(exchanges)} exchange(s): {', '.join(exchanges)}")
    totals = {k: sum(s["faults"][k] for s in streams) for k in streams[0]["faults"]}
    found = ", ".join(f"{k} {v}" for k, v in totals.items() if v)
    print(f"faults: {found or 'none'}")
    shown = streams
    if not verbose and len(streams) > SUMMARY_ROWS:
        faulty = [s for s in streams if any(s["faults"].values())]
        shown = sorted(faulty, key=lambda s: (s["integrity_score"], s["exchange"], s["symbol"]))[
            :SUMMARY_ROWS
        ]
        print(
            f"{len(faulty)} stream(s) with faults; the {len(shown)} lowest scores:" if faulty else "all clean"
        )
    width = max((len(f"{s['exchange']} {s['symbol']} {s['channel']}") for s in shown), default=20)
    for s in shown:
        name = f"{s['exchange']} {s['symbol']} {s['channel']}"
        faults = ", ".join(f"{k} {v}" for k, v in s["faults"].items() if v)
        score = s["integrity_score"]
        print(f"  {name:<{width}}  {s['messages']:>9} msgs  score {score:6.2f}  {faults or 'clean'}")
    if shown is not streams:
        print(f"  (every stream: {out_dir}/report.json, or --verbose)")
    print(f"results in {out_dir}/ (report.json, audit/records.jsonl, audit/MANIFEST, books/)")


def cmd_book(args: argparse.Namespace) -> int:
    from shared.engine import rebuild_book

    _check_paths(args.paths)
    at = parse_time(args.at)
    cfg = AuditConfig(reorder_window=args.reorder_window)
    result = rebuild_book(args.paths, args.exchange, args.symbol, at, depth=args.depth, cfg=cfg)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return EXIT_OK


def _broker(args: argparse.Namespace) -> str:
    url = args.broker or os.environ.get("REDIS_URL")
    if not url:
        raise UsageError("no broker: give --broker URL or set REDIS_URL")
    return str(url)


def cmd_worker(args: argparse.Namespace) -> int:
    from shared.queues import parse_queues
    from workers.app import create_app

    try:
        queues = parse_queues(args.queues)
    except ValueError as exc:
        raise UsageError(f"--queues: {exc}") from None
    app = create_app(_broker(args))
    app.worker_main(["worker", "-Q", ",".join(queues), "--concurrency", str(args.concurrency), "-l", "info"])
    return EXIT_OK


def cmd_produce(args: argparse.Namespace) -> int:
    import redis

    from producers.run import job_vanished, lost_broker, serve
    from producers.submit import DONE, SERVED_ELSEWHERE, submit
    from shared import keys

    _check_paths(args.paths)
    url = _broker(args)
    jid = ""
    try:
        sub = submit(url, args.paths, _config(args), os.path.abspath(args.out))
        jid = sub.job
        print(sub.job, flush=True)
        if sub.outcome == DONE:
            print(f"retape: job {sub.job} was already done: nothing new", file=sys.stderr)
        elif sub.outcome == SERVED_ELSEWHERE:
            print(f"retape: job {sub.job} is being served by another producer: nothing new", file=sys.stderr)
        else:
            # The workers read the inputs through the broker: serve them until every
            # segment has its result (the aggregator then writes the outputs).
            client = redis.Redis.from_url(url)
            serve(client, sub)
            if not client.exists(keys.job(sub.job)):
                raise job_vanished(sub.job)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise lost_broker(url, jid, exc) from None
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    import redis

    from producers.submit import status

    try:
        got = status(redis.Redis.from_url(_broker(args)), args.job)
    except redis.RedisError as exc:
        raise UsageError(f"broker unreachable: {exc}") from None
    sys.stdout.write(orjson.dumps(got).decode() + "\n")
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


if __name__ == "__main__":
    raise SystemExit(main())
