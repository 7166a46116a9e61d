"""Prometheus metrics retape publishes, by name, and the text file the aggregator writes.

Every output directory gets ``metrics.prom`` (Prometheus text format, for node_exporter's
textfile collector or any scraper that reads files).  The alert rules in
``ops/prometheus/alerts.yml`` use these names; a test keeps the two in step.

Pure: the text is a function of the report (and, when gaps were sent to replay sources, of
the requests that made: their times and failures are this run's, so only those series change
from run to run), sorted, with no wall-clock time.
"""

from __future__ import annotations

from typing import Any

METRICS_NAME = "metrics.prom"

# name -> (type, help).  Stream metrics carry exchange, symbol and channel labels.
METRICS: dict[str, tuple[str, str]] = {
    "retape_stream_integrity_score": ("gauge", "Integrity score of a stream, 0 to 100 (report.json)."),
    "retape_stream_messages": ("gauge", "Messages read for a stream, duplicates included."),
    "retape_stream_faults": ("gauge", "Faults found in a stream, by kind."),
    "retape_stream_gap_rate": ("gauge", "Gaps per message read in a stream (0.01 is 1 %)."),
    "retape_input_malformed_lines": ("gauge", "Lines of the audited inputs that could not be parsed."),
    "retape_job_dead_letters": ("gauge", "Tasks of the job that ended in the dead-letter list."),
    # Published by the replay workers (fetching missing ranges from replay sources).
    "retape_replay_request_duration_seconds": (
        "histogram",
        "Time to fetch one range from a replay source, by source.",
    ),
    "retape_upstream_connection_failures_total": (
        "counter",
        "Connections to a replay source or exchange that failed (refused, reset, timed out, TLS).",
    ),
    "retape_replay_rate_limited_total": ("counter", "Answers 429 (rate limited) from a replay source."),
    "retape_replay_breaker_open": (
        "gauge",
        "1 when a replay source's circuit breaker was found open (the next source was used).",
    ),
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _series(name: str, labels: dict[str, str], value: float | int) -> str:
    inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {value}" if inner else f"{name} {value}"


def render(report: dict[str, Any], dead_letters: int = 0, replay: dict[str, Any] | None = None) -> str:
    """The job's metrics as Prometheus text, from its ``report.json`` content and its replay
    requests (by source, see :mod:`shared.replay.stats`)."""
    lines: list[str] = []

    def head(name: str) -> None:
        kind, text = METRICS[name]
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")

    streams = sorted(report["streams"], key=lambda s: (s["exchange"], s["symbol"], s["channel"]))

    def ident(s: dict[str, Any]) -> dict[str, str]:
        return {"exchange": str(s["exchange"]), "symbol": str(s["symbol"]), "channel": str(s["channel"])}

    head("retape_stream_integrity_score")
    lines += [_series("retape_stream_integrity_score", ident(s), s["integrity_score"]) for s in streams]
    head("retape_stream_messages")
    lines += [_series("retape_stream_messages", ident(s), s["messages"]) for s in streams]
    head("retape_stream_faults")
    for s in streams:
        for kind, count in sorted(s["faults"].items()):
            lines.append(_series("retape_stream_faults", {**ident(s), "kind": kind}, count))
    head("retape_stream_gap_rate")
    for s in streams:
        rate = s["faults"]["gap"] / s["messages"] if s["messages"] else 0.0
        lines.append(_series("retape_stream_gap_rate", ident(s), round(rate, 6)))
    head("retape_input_malformed_lines")
    lines.append(_series("retape_input_malformed_lines", {}, int(report["malformed"])))
    head("retape_job_dead_letters")
    lines.append(_series("retape_job_dead_letters", {}, dead_letters))
    if replay:
        _replay_lines(replay, lines, head)
    return "\n".join(lines) + "\n"


def _replay_lines(replay: dict[str, Any], lines: list[str], head: Any) -> None:
    from shared.replay.stats import BUCKETS_S

    name = "retape_replay_request_duration_seconds"
    sources = sorted(replay)
    head(name)
    for source in sources:
        s = replay[source]
        for bound, n in zip(BUCKETS_S, s["buckets"], strict=True):
            lines.append(_series(f"{name}_bucket", {"source": source, "le": f"{bound:g}"}, n))
        lines.append(_series(f"{name}_bucket", {"source": source, "le": "+Inf"}, s["count"]))
        lines.append(_series(f"{name}_sum", {"source": source}, round(s["sum"], 6)))
        lines.append(_series(f"{name}_count", {"source": source}, s["count"]))
    for metric, field in (
        ("retape_upstream_connection_failures_total", "failures"),
        ("retape_replay_rate_limited_total", "rate_limited"),
        ("retape_replay_breaker_open", "breaker_open"),
    ):
        head(metric)
        lines += [_series(metric, {"source": source}, replay[source][field]) for source in sources]
