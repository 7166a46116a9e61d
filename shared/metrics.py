"""Prometheus metrics retape publishes, by name, and the text file the aggregator writes.

Every output directory gets ``metrics.prom`` (Prometheus text format, for node_exporter's
textfile collector or any scraper that reads files).  The alert rules in
``ops/prometheus/alerts.yml`` use these names; a test keeps the two in step.

Pure: the text is a function of the report, sorted, with no wall-clock time, so the same
inputs give the same bytes.
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
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _series(name: str, labels: dict[str, str], value: float | int) -> str:
    inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {value}" if inner else f"{name} {value}"


def render(report: dict[str, Any], dead_letters: int = 0) -> str:
    """The job's metrics as Prometheus text, from its ``report.json`` content."""
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
    return "\n".join(lines) + "\n"
