"""``report.html``: the audit for people, one self-contained page.

Everything the page needs is inside it (the plotting library plotly.js, the page's own script
and style, the data), and its Content-Security-Policy forbids every request, so it opens from
disk with no network.  The page is rendered by Jinja2 from ``templates/report.html.j2``.

Above the fold: the verdict (inputs not audited or damaged, streams with faults), the worst
streams, the fault kinds that matter with the streams they touch, and the totals.  Below, a
table of every stream, sortable by each column; opening a stream's row draws (lazily, from JSON
embedded in the page) its receive-time timeline (unsafe intervals, gaps, disconnects, the other
findings) and its receive-latency distribution.

The page stays small whatever the number of findings: gaps, unsafe intervals and disconnects are
exact; any other kind is exact while a stream has few of it and counted in time bins beyond.

Same inputs, same bytes: no wall-clock time, no random ids, sorted JSON keys, a fixed order
for everything; the findings are sorted here since their order may depend on the workers.
"""

from __future__ import annotations

import functools
import heapq
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from itertools import islice
from typing import Any

import orjson
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from shared.auditors import StreamResult
from shared.checks.timing import BUCKET_US
from shared.model import FAULT_KINDS, Finding, Gap
from shared.outdir import atomic_write
from shared.spool import safe_json

HTML_NAME = "report.html"

# The fault kinds in the order they matter to someone using the data: a book or trade
# series that is wrong first, clocks last.  Each with what it means for that person.
SEVERITY: tuple[tuple[str, str], ...] = (
    ("gap", "messages lost: the book is wrong until the next snapshot, trades are missing"),
    ("checksum_mismatch", "the rebuilt book differs from the exchange's own checksum"),
    ("snapshot_mismatch", "a snapshot disagreed with a book believed in sync (silent desync)"),
    ("invalid_value", "a price or quantity that cannot be right; not applied"),
    ("disconnect", "the recorder lost the connection: the book is unknown until the next snapshot"),
    ("crossed_book", "best bid at or above best ask while the book was in sync"),
    ("format_change", "the message shape changed: the parser may no longer be right"),
    ("duplicate", "a message received twice (not applied twice)"),
    (
        "funding_discontinuity",
        "a funding time that went back or skipped a settlement, or a rate past the cap",
    ),
    ("out_of_order", "a message that arrived late and was put back in its place"),
    ("timestamp_drift", "a receive-time offset far from the stream's median, or exchange time going back"),
)
_RANK = {kind: i for i, (kind, _) in enumerate(SEVERITY)}
# Kinds that cost nothing in the score nor in the book: shown, never called a problem.
_BENIGN = frozenset({"out_of_order"})

TIME_BINS = 200  # timeline bins per stream for kinds with many findings
EXACT_MAX = 300  # findings of one kind in one stream drawn one by one, at most
ALWAYS_EXACT = frozenset({"disconnect"})  # whatever their number (up to INTERVALS_MAX)
INTERVALS_MAX = 2000  # gaps and unsafe intervals drawn per stream, at most (the rest counted)
DETAIL_CHARS = 240  # of a finding's detail, in its hover text
LATENCY_BINS = 60  # about: the histogram between the 0.1% and 99.9% quantiles
WORST = 10  # streams named above the fold

_TEMPLATES = "templates"
_PAGE = "report.html.j2"


def compile_page() -> None:
    """Compile the page and read Plotly's script now (a worker does it before its pool
    forks, so the aggregator's first report does not wait for them)."""
    _environment().get_template(_PAGE)
    _plotly_js()


def write_html(report: Mapping[str, Any], streams: Sequence[StreamResult], out_dir: str) -> str:
    """Write ``out_dir/report.html`` for ``report`` (the report.json content) and the streams'
    results it was made from (same order); return its path."""
    path = os.path.join(out_dir, HTML_NAME)
    atomic_write(path, render_html(report, streams).encode("utf-8"))
    return path


def render_html(report: Mapping[str, Any], streams: Sequence[StreamResult]) -> str:
    rows = list(report.get("streams", []))
    if len(rows) != len(streams):
        raise ValueError(f"report has {len(rows)} streams, results {len(streams)}")
    entries = []
    for i, (row, result) in enumerate(zip(rows, streams, strict=True)):
        key = (row["exchange"], row["symbol"], row["channel"])
        if tuple(result.key) != key:
            raise ValueError(f"stream {i}: report {key} but result {tuple(result.key)}")
        entries.append(_stream_entry(i, row, result))
    env = _environment()
    template = env.get_template(_PAGE)
    return template.render(
        summary=_summary(report, entries),
        streams=sorted(entries, key=lambda e: (e["score"], e["i"])),  # the worst first, as the script sorts
        fault_kinds=list(FAULT_KINDS),
        style=Markup(_source(env, "report.css")),
        script=Markup(_script_text(_source(env, "report.js"))),
        plotly_js=Markup(_plotly_js()),
    )


# ---------------------------------------------------------------------------------------------
# The page's pieces


@functools.cache
def _environment() -> Environment:
    """One environment per process: it keeps the compiled page (compiling it costs more than
    rendering a report), so a long-lived aggregator compiles it once."""
    env = Environment(
        loader=PackageLoader("shared", _TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _fmt_int
    env.filters["pct"] = _fmt_pct
    env.filters["ms"] = _fmt_ms
    env.filters["secs"] = _fmt_secs
    env.filters["score"] = _fmt_score
    env.filters["sortv"] = _sort_value
    return env


def _source(env: Environment, name: str) -> str:
    """A template file as it is (the script and the style are not Jinja templates)."""
    assert env.loader is not None
    return env.loader.get_source(env, name)[0]


@functools.cache
def _plotly_js() -> str:
    """Plotly's script, ready for the page (read and escaped once per process: 3.5 MB)."""
    from plotly.offline import get_plotlyjs

    return _script_text(str(get_plotlyjs()))


def _script_text(js: str) -> str:
    """Text that can sit inside a <script> element: no ``</script`` in it."""
    return js.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")


def _json_for_html(obj: Any) -> Markup:
    """Sorted-key JSON that can sit inside a <script type="application/json"> element."""
    text = orjson.dumps(safe_json(obj), option=orjson.OPT_SORT_KEYS).decode("utf-8")
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


# ---------------------------------------------------------------------------------------------
# Per stream: the table row and the charts' data


def _stream_entry(index: int, row: Mapping[str, Any], result: StreamResult) -> dict[str, Any]:
    faults = {k: int(row["faults"].get(k, 0)) for k in FAULT_KINDS}
    rates = row.get("rates") or {}
    latency = row.get("latency_ms") or None
    damage = row.get("input_damage") or {}
    unrepaired = sum(1 for g in result.gaps if not g.repaired)
    unsafe_by_cause: dict[str, int] = {}
    for u in result.unsafe:
        unsafe_by_cause[u.cause] = unsafe_by_cause.get(u.cause, 0) + 1
    # The kinds found, in the order they matter (those that cost nothing last).
    main = sorted(
        ((k, n) for k, n in faults.items() if n),
        key=lambda kn: (kn[0] in _BENIGN, _RANK.get(kn[0], 99), kn[0]),
    )
    return {
        "i": index,
        "id": f"s{index}",
        "exchange": row["exchange"],
        "symbol": row["symbol"],
        "channel": row["channel"],
        "name": f"{row['exchange']} {row['symbol']} {row['channel']}",
        "messages": row["messages"],
        "faults": faults,
        "fault_total": sum(faults.values()),
        "main_faults": main[:3],
        "gaps": len(result.gaps),
        "unrepaired_gaps": unrepaired,
        "unsafe_intervals": len(result.unsafe),
        "unsafe_by_cause": dict(sorted(unsafe_by_cause.items())),
        "unsafe_seconds": row.get("unsafe_seconds"),
        "rates": {k: rates.get(k) for k in sorted(rates)},
        "latency": latency,
        "score": row["integrity_score"],
        "damaged_lines": int(damage.get("malformed_lines") or 0),
        "cut_off": bool(damage.get("cut_off")),
        "first_time": row.get("first_time"),
        "last_time": row.get("last_time"),
        "data": _json_for_html(_chart_data(row, result)),
    }


def _chart_data(row: Mapping[str, Any], result: StreamResult) -> dict[str, Any]:
    first, last = _int(row.get("first_us")), _int(row.get("last_us"))
    return {
        "name": f"{row['exchange']} {row['symbol']} {row['channel']}",
        "score": row["integrity_score"],
        "span": [first, last] if first is not None and last is not None else None,
        "unsafe": [
            [_int(u.from_us), _int(u.to_us), u.cause, u.messages]
            for u in islice(result.unsafe, INTERVALS_MAX)
        ],
        "unsafe_more": max(0, len(result.unsafe) - INTERVALS_MAX),
        # The first gaps in time (a bounded heap: a stream may have a million).
        "gaps": heapq.nsmallest(INTERVALS_MAX, map(_gap_row, result.gaps), key=_timed_key),
        "gaps_more": max(0, len(result.gaps) - INTERVALS_MAX),
        **_findings_data(result.findings, first, last),
        "latency": _latency_data(result, row.get("latency_ms")),
    }


def _gap_row(gap: Gap) -> list[Any]:
    return [_int(gap.local_us), gap.after, gap.before, gap.missing, gap.repaired, gap.source]


def _timed_key(item: Sequence[Any]) -> tuple[Any, ...]:
    t = item[0]
    return (t is None, t if t is not None else 0, orjson.dumps(safe_json(list(item[1:]))))


def _findings_data(findings: Iterable[Finding], first: int | None, last: int | None) -> dict[str, Any]:
    """The stream's findings other than gaps (drawn from the gap list): exact where few or
    always exact, else counted per time bin; findings with no receive time counted apart."""
    span_ok = first is not None and last is not None and last >= first
    start = first if first is not None and span_ok else 0
    width = max(1, -(-(last - start + 1) // TIME_BINS)) if last is not None and span_ok else 1
    exact: dict[str, list[tuple[Any, ...]] | None] = {}
    bins: dict[str, dict[int, int]] = {}
    untimed: dict[str, int] = {}
    totals: dict[str, int] = {}
    for f in findings:
        kind = f.fault
        if kind == "gap":
            continue
        totals[kind] = totals.get(kind, 0) + 1
        t = _int(f.local_us)
        if t is None or not span_ok:
            untimed[kind] = untimed.get(kind, 0) + 1
            continue
        b = min(TIME_BINS - 1, max(0, (t - start) // width))
        per = bins.setdefault(kind, {})
        per[b] = per.get(b, 0) + 1
        events = exact.setdefault(kind, [])
        if events is not None:
            limit = INTERVALS_MAX if kind in ALWAYS_EXACT else EXACT_MAX
            if len(events) >= limit:
                exact[kind] = None  # too many: this kind is binned
            else:
                events.append((t, f.path, f.line, _detail_text(f.detail)))
    paths: dict[str, int] = {}
    out_exact: dict[str, list[list[Any]]] = {}
    out_bins: dict[str, list[list[int]]] = {}
    for kind in sorted(totals, key=lambda k: (_RANK.get(k, 99), k)):
        events = exact.get(kind)
        if events is not None:
            rows = []
            for t, path, line, detail in sorted(events):
                p = paths.setdefault(path, len(paths))
                rows.append([t, p, line, detail])
            out_exact[kind] = rows
        elif kind in bins:
            out_bins[kind] = [[b, n] for b, n in sorted(bins[kind].items())]
    return {
        "kinds": sorted(totals, key=lambda k: (_RANK.get(k, 99), k)),
        "exact": out_exact,
        "bins": out_bins,
        "bin_us": width,
        "untimed": dict(sorted(untimed.items())),
        "paths": sorted(paths, key=lambda p: paths[p]),
    }


def _detail_text(detail: Mapping[str, Any] | None) -> str:
    if not detail:
        return ""
    text = orjson.dumps(safe_json(detail), option=orjson.OPT_SORT_KEYS).decode("utf-8")
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 1] + "\u2026"


def _nice(n: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... at or above ``n``."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if step * m >= n:
                return step * m
        step *= 10


def _latency_data(result: StreamResult, percentiles: Any) -> dict[str, Any] | None:
    """The receive-latency histogram re-binned to about LATENCY_BINS bars between its 0.1% and
    99.9% quantiles, with what lies outside in two bars of its own; integers of microseconds."""
    hist = result.latency.hist
    total = sum(hist.values())
    if not hist or total <= 0:
        return None
    keys = sorted(hist)

    def bucket_at(rank: int) -> int:
        seen = 0
        for k in keys:
            seen += hist[k]
            if seen >= rank:
                return k
        return keys[-1]

    lo = bucket_at(max(1, math.ceil(total * 0.001)))
    hi = bucket_at(max(1, math.ceil(total * 0.999)))
    width = _nice(max(1, -(-(hi - lo + 1) // LATENCY_BINS)))  # in buckets
    start = (lo // width) * width
    count = (hi - start) // width + 1
    counts = [0] * count
    under = over = 0
    for k in keys:
        if k < start:
            under += hist[k]
        elif k >= start + count * width:
            over += hist[k]
        else:
            counts[(k - start) // width] += hist[k]
    return {
        "width_us": width * BUCKET_US,
        "start_us": start * BUCKET_US,
        "counts": counts,
        "under": [under, keys[0] * BUCKET_US],
        "over": [over, result.latency.max_us if result.latency.max_us is not None else keys[-1] * BUCKET_US],
        "total": total,
        "ms": percentiles,
    }


# ---------------------------------------------------------------------------------------------
# The totals and what a user sees first


def _summary(report: Mapping[str, Any], entries: list[dict[str, Any]]) -> dict[str, Any]:
    inputs = list(report.get("inputs", []))
    totals = dict.fromkeys(FAULT_KINDS, 0)
    touched = dict.fromkeys(FAULT_KINDS, 0)
    worst_of: dict[str, dict[str, Any]] = {}
    for e in entries:
        for kind, n in e["faults"].items():
            if n:
                totals[kind] += n
                touched[kind] += 1
                best = worst_of.get(kind)
                if best is None or (n, -e["i"]) > (best["faults"][kind], -best["i"]):
                    worst_of[kind] = e
    meanings = dict(SEVERITY)
    kinds: list[dict[str, Any]] = [
        {
            "kind": kind,
            "meaning": meanings.get(kind, ""),
            "total": totals[kind],
            "streams": touched[kind],
            "worst": worst_of.get(kind),
            "benign": kind in _BENIGN,
        }
        for kind in sorted(FAULT_KINDS, key=lambda k: (_RANK.get(k, 99), k))
    ]
    span_from = _span_time(report, "first", min)
    span_to = _span_time(report, "last", max)
    troubled = [e for e in entries if _troubled(e)]
    worst = sorted(troubled, key=_badness)[:WORST]
    channels: dict[str, int] = {}
    for e in entries:
        channels[e["channel"]] = channels.get(e["channel"], 0) + 1
    unsafe_causes: dict[str, float] = {}
    for r in report.get("streams", []):
        for cause, seconds in (r.get("unsafe_by_cause") or {}).items():
            unsafe_causes[cause] = unsafe_causes.get(cause, 0.0) + float(seconds)
    # What was found first, in the order it matters; then what was found but costs nothing; then the rest.
    kinds.sort(key=lambda k: 0 if k["total"] and not k["benign"] else 1 if k["total"] else 2)
    scores = [e["score"] for e in entries]
    return {
        "inputs": len(inputs),
        "lines": sum(int(i.get("lines") or 0) for i in inputs),
        "ignored": sum(int(i.get("ignored") or 0) for i in inputs),
        "malformed": int(report.get("malformed") or 0),
        "not_audited": [i for i in inputs if i.get("audited") is False],
        "cut_off": [i for i in inputs if i.get("cut_off")],
        "damaged": [i for i in inputs if i.get("malformed")],
        "no_stream": [i for i in inputs if i.get("audited") is not False and i.get("streams") == 0],
        "streams": len(entries),
        "channels": dict(sorted(channels.items())),
        "exchanges": len({e["exchange"] for e in entries}),
        "messages": sum(int(e["messages"]) for e in entries),
        "with_faults": sum(1 for e in entries if _has_damage(e)),
        "fault_total": sum(totals.values()),
        "kinds": kinds,
        "span_from": span_from,
        "span_to": span_to,
        "worst": worst,
        "troubled": len(troubled),
        "lowest_score": min(scores) if scores else None,
        "unsafe_causes": {k: round(v, 3) for k, v in sorted(unsafe_causes.items())},
        "unsafe_seconds": round(sum(unsafe_causes.values()), 3),
    }


def _span_time(report: Mapping[str, Any], side: str, pick: Any) -> str | None:
    timed = [
        (t, r.get(f"{side}_time"))
        for r in report.get("streams", [])
        if (t := _int(r.get(f"{side}_us"))) is not None and r.get(f"{side}_time")
    ]
    return pick(timed)[1] if timed else None


def _has_damage(e: Mapping[str, Any]) -> bool:
    harmful = any(n for k, n in e["faults"].items() if k not in _BENIGN)
    return harmful or e["damaged_lines"] > 0 or e["cut_off"] or e["score"] < 100


def _troubled(e: Mapping[str, Any]) -> bool:
    """A stream worth naming first: faults that cost, damaged input, or book time that cannot be
    trusted for another reason than waiting for the first snapshot."""
    if _has_damage(e):
        return True
    return any(cause != "no_snapshot" for cause in e["unsafe_by_cause"])


def _badness(e: Mapping[str, Any]) -> tuple[Any, ...]:
    unsafe = e["unsafe_seconds"] if isinstance(e["unsafe_seconds"], (int, float)) else 0.0
    return (e["score"], -e["unrepaired_gaps"], -unsafe, -e["fault_total"], e["i"])


# ---------------------------------------------------------------------------------------------
# Formatting (the template's filters): fixed, locale-free text


def _fmt_int(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "\u2013"


def _fmt_pct(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "\u2013"
    pct = value * 100
    if pct == 0:
        return "0%"
    if pct < 0.01:
        return "<0.01%"
    return f"{pct:.2f}%"


def _fmt_ms(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "\u2013"


def _fmt_secs(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "\u2013"
    if value == 0:
        return "0 s"
    if value < 60:
        return f"{value:.3f} s"
    if value < 3600:
        return f"{int(value // 60)} min {value % 60:.0f} s"
    return f"{int(value // 3600)} h {int(value % 3600 // 60)} min"


def _fmt_score(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "\u2013"


def _sort_value(value: Any) -> str:
    """A cell's sort key for the page's script: a number as text, empty for none."""
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    return str(value)
