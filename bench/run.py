"""Benchmark: end-to-end audit of Binance USD-M depth against a plain sortedcontainers rebuild.

Both sides read the same gzip capture built from the real hftbacktest USD-M BTCUSDT file
(its REST snapshot and depth diffs, continued ``--copies`` times with shifted ids and
times so the pu chain runs unbroken), parse every line, check continuity, maintain the
book, check values and crossing after every message and keep latency/drift statistics.
The baseline keeps each side in a ``SortedDict`` keyed by float price; retape uses
:mod:`shared.book`.  Printed: level updates per second for each and their ratio.  Then
the memory check: peak RSS of a whole ``retape audit --in-process`` (report and records
written) of the capture, of one ten times longer, and of one as long where every message is
sent ten times (nine duplicate findings each: findings go to disk, memory stays flat).
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "data" / "hftbacktest" / "usdm" / "btcusdt_20240808.gz"
OUT = ROOT / "bench" / "out"


def source_depth() -> tuple[bytes, list[tuple[int, dict]]]:
    """The real capture's REST snapshot line and its depth diffs (receive ns, message) from
    the one the snapshot bridges onto: the diffs before it arrived are older, and dropped."""
    snapshot: bytes | None = None
    diffs: list[tuple[int, dict]] = []
    last_id = None
    with gzip.open(SOURCE, "rb") as fh:
        for line in fh:
            ts, _, raw = line.rstrip(b"\n").partition(b" ")
            if b"lastUpdateId" in raw[:20]:
                snapshot = line
                last_id = orjson.loads(raw)["lastUpdateId"]
            elif b"@depth" in raw[:40]:
                diffs.append((int(ts), orjson.loads(raw)))
    assert snapshot is not None and last_id is not None
    diffs = [(ts, obj) for ts, obj in diffs if obj["data"]["u"] >= last_id]
    assert diffs
    return snapshot, diffs


def build_capture(copies: int, dest: Path, symbol: str | None = None) -> tuple[int, int, float]:
    """Write the benchmark capture (gzip when ``dest`` ends in ``.gz``, else plain text), as
    BTCUSDT or as ``symbol``; return (depth messages, level updates, seconds it spans)."""
    snapshot, diffs = source_depth()
    first_pu = diffs[0][1]["data"]["pu"]
    last_u = diffs[-1][1]["data"]["u"]
    id_step = last_u - first_pu
    ns_step = diffs[-1][0] - diffs[0][0] + 1_000_000
    messages = levels = 0
    stream = None
    if symbol is not None:
        stream = diffs[0][1]["stream"].replace("btcusdt", symbol.lower(), 1)
    gz = dest.suffix == ".gz"
    with gzip.open(dest, "wb", compresslevel=1) if gz else open(dest, "wb") as out:
        out.write(snapshot)
        for k in range(copies):
            for t_ns, obj in diffs:
                d = dict(obj["data"])
                if symbol is not None:
                    d["s"] = symbol
                if k:
                    d["U"] += k * id_step
                    d["u"] += k * id_step
                    d["pu"] += k * id_step
                    d["E"] += k * ns_step // 1_000_000
                    d["T"] += k * ns_step // 1_000_000
                out.write(
                    b"%d " % (t_ns + k * ns_step)
                    + orjson.dumps({"stream": stream or obj["stream"], "data": d})
                    + b"\n"
                )
                messages += 1
                levels += len(d["b"]) + len(d["a"])
    return messages, levels, copies * ns_step / 1e9


def build_small_messages(dest: Path, messages: int = 250_000, per_message: int = 8) -> tuple[int, int]:
    """A USD-M-like stream of small messages (what ``@depth@0ms`` streams, Bybit and OKX send):
    the real capture's level updates, its diffs cut into messages of ``per_message`` or
    ``per_message + 1`` updates with their own unbroken ``U``/``u``/``pu`` chain, written as
    plain text until ``messages`` are out; return (messages, level updates)."""
    snapshot, diffs = source_depth()
    prev = diffs[0][1]["data"]["pu"]
    span_ns = diffs[-1][0] - diffs[0][0] + 1_000_000
    written = levels = copy = k = 0
    with open(dest, "wb") as out:
        out.write(snapshot)
        while written < messages:
            for t_ns, obj in diffs:
                d = obj["data"]
                ups = [("b", lv) for lv in d["b"]] + [("a", lv) for lv in d["a"]]
                shift_ms = copy * span_ns // 1_000_000
                i = 0
                while i < len(ups) and written < messages:
                    n = per_message + (k % 2)
                    k += 1
                    part = ups[i : i + n]
                    i += n
                    small = {
                        "e": "depthUpdate",
                        "E": d["E"] + shift_ms,
                        "T": d["T"] + shift_ms,
                        "s": d["s"],
                        "U": prev + 1,
                        "u": prev + 1,
                        "pu": prev,
                        "b": [lv for side, lv in part if side == "b"],
                        "a": [lv for side, lv in part if side == "a"],
                    }
                    prev += 1
                    out.write(
                        b"%d " % (t_ns + copy * span_ns)
                        + orjson.dumps({"stream": obj["stream"], "data": small})
                        + b"\n"
                    )
                    written += 1
                    levels += len(part)
                if written >= messages:
                    break
            copy += 1
    return written, levels


def _lines(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # type: ignore[return-value]


def baseline(path: Path) -> int:
    """A plain rebuild: SortedDict per side, the same checks; returns crossed episodes."""
    from sortedcontainers import SortedDict

    from shared.checks.timing import Timing

    inf = float("inf")
    bids: SortedDict = SortedDict()
    asks: SortedDict = SortedDict()
    timing = Timing(100.0)
    last = None
    crossed = False
    episodes = gaps = invalid = 0
    with _lines(path) as fh:
        for line in fh:
            ts, _, raw = line.partition(b" ")
            obj = orjson.loads(raw)
            d = obj.get("data")
            if d is None:
                for side, levels in ((bids, obj["bids"]), (asks, obj["asks"])):
                    side.clear()
                    for p, q in levels:
                        side[float(p)] = q
                last = obj["lastUpdateId"]
                continue
            if last is not None and d["pu"] != last:
                gaps += 1
            last = d["u"]
            for side, levels in ((bids, d["b"]), (asks, d["a"])):
                for p, q in levels:
                    k = float(p)
                    fq = float(q)
                    if not (0.0 < k < inf) or not (0.0 <= fq < inf):
                        invalid += 1
                        continue
                    if fq == 0.0:
                        side.pop(k, None)
                    else:
                        side[k] = q
            timing.check(int(ts) // 1000, d["E"] * 1000)
            if bids and asks and bids.peekitem(-1)[0] >= asks.peekitem(0)[0]:
                if not crossed:
                    episodes += 1
                crossed = True
            else:
                crossed = False
    return episodes


def retape(path: Path) -> int:
    from shared.auditors import AuditConfig
    from shared.engine import Engine

    outcome = Engine(AuditConfig()).run([str(path)])
    return sum(s.faults["crossed_book"] for s in outcome.streams)


def timed_pair(path: Path, repeat: int) -> tuple[float, float]:
    """Median time of each side over ``repeat`` runs, the runs interleaved so both see the
    same machine."""
    base: list[float] = []
    ours: list[float] = []
    for _ in range(repeat):
        for fn, times in ((baseline, base), (retape, ours)):
            t = time.perf_counter()
            fn(path)
            times.append(time.perf_counter() - t)
    return statistics.median(base), statistics.median(ours)


def compiled_vs_pure(path: Path, repeat: int) -> tuple[float | None, float]:
    """Median time of the engine with the compiled parts (the fast lane included) and with
    their pure-Python references (``RETAPE_PURE_PYTHON``'s choice, made here in one process),
    interleaved; None for the compiled side when they are not built."""
    from shared import book, fastlane
    from shared.checks import shapes

    swaps: list[tuple[Any, str, Any]] = [
        (shapes, "fingerprint", shapes.py_fingerprint),
        (book, "apply_levels", book.py_apply_levels),
        (fastlane, "_C", None),  # no lane: every line on the Python path
    ]
    chosen = [getattr(module, name) for module, name, _ in swaps]
    if all(c is ref for c, (_, _, ref) in zip(chosen, swaps, strict=True)):
        return None, statistics.median(_timed(path) for _ in range(repeat))
    times: dict[str, list[float]] = {"compiled": [], "pure": []}
    try:
        for _ in range(repeat):
            for side in ("compiled", "pure"):
                for (module, name, ref), fn in zip(swaps, chosen, strict=True):
                    setattr(module, name, fn if side == "compiled" else ref)
                times[side].append(_timed(path))
    finally:
        for (module, name, _), fn in zip(swaps, chosen, strict=True):
            setattr(module, name, fn)
    return statistics.median(times["compiled"]), statistics.median(times["pure"])


def _timed(path: Path) -> float:
    t = time.perf_counter()
    retape(path)
    return time.perf_counter() - t


def peak_rss_mb(path: Path) -> float:
    """Peak memory of ``retape audit --in-process`` of ``path``, reports written."""
    out_dir = OUT / f"audit_{path.name.split('.')[0]}"
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from producers.cli import main\n"
        f"rc = main(['audit', {str(path)!r}, '--in-process', '--quiet', '--out', {str(out_dir)!r}])\n"
        # VmHWM: the peak of this process's own memory (ru_maxrss can carry the parent's
        # peak across fork and exec).
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def repeat_lines(src: Path, dest: Path, times: int) -> None:
    """Every line of ``src`` sent ``times`` times in a row (each repeat a duplicate)."""
    with gzip.open(src, "rb") as fh, gzip.open(dest, "wb", compresslevel=1) as out:
        for line in fh:
            out.write(line * times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4, help="how many times the capture is continued")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each side, interleaved (median)")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    capture = OUT / f"usdm_depth_x{args.copies}.gz"
    messages, levels, span_s = build_capture(args.copies, capture)
    small = OUT / "usdm_small_messages.txt"
    small_messages, small_levels = build_small_messages(small)
    print(f"input: {capture.relative_to(ROOT)}: {messages} depth messages, {levels} level updates")
    print(f"input: {small.relative_to(ROOT)}: {small_messages} depth messages, {small_levels} level updates")
    rows = []
    for name, path, count in (("real capture", capture, levels), ("small messages", small, small_levels)):
        t_base, t_ours = timed_pair(path, args.repeat)
        rows.append((name, count / t_base / 1e6, count / t_ours / 1e6))
    print(f"medians of {args.repeat} interleaved runs, one core, in one process (--in-process)")
    print("input             baseline M/s   retape M/s   ratio   (target >= 4x)")
    for name, base_rate, ours_rate in rows:
        print(f"{name:<16} {base_rate:13.2f} {ours_rate:12.2f} {ours_rate / base_rate:7.2f}x")
    compiled_s, pure_s = compiled_vs_pure(small, args.repeat)
    if compiled_s is None:
        print("compiled parts: not built here (make setup needs gcc and the Python headers)")
    else:
        print(
            f"small messages, compiled parts vs pure Python: {pure_s:.3f} s / {compiled_s:.3f} s = "
            f"{pure_s / compiled_s:.2f}x"
        )
    ours_rate = rows[0][2]
    day_levels = levels / span_s * 86_400
    print(
        f"a day of this stream (~{day_levels / 1e6:.0f} M level updates) at this rate: "
        f"{day_levels / (ours_rate * 1e6):.0f} s on one core"
    )
    if not args.skip_memory:
        one = OUT / "usdm_depth_x1.gz"
        large = OUT / "usdm_depth_x10.gz"
        repeated = OUT / "usdm_depth_x1_each10.gz"
        build_capture(1, one)
        build_capture(10, large)
        repeat_lines(one, repeated, 10)
        rss_small = peak_rss_mb(one)
        rss_large = peak_rss_mb(large)
        rss_repeated = peak_rss_mb(repeated)
        print(
            f"memory: peak RSS {rss_small:.0f} MB (x1) vs {rss_large:.0f} MB (x10): "
            f"ratio {rss_large / rss_small:.2f} (target <= ~2)"
        )
        print(
            f"memory: peak RSS {rss_repeated:.0f} MB (x1, every message ten times: "
            f"nine duplicate findings each) vs {rss_large:.0f} MB (x10 clean): "
            f"ratio {rss_repeated / rss_large:.2f} (target <= ~1.5)"
        )


if __name__ == "__main__":
    main()
