"""What the replay requests of a job cost, per source, for ``metrics.prom``: a latency
histogram, 429s, connection failures, and whether the breaker was found open.

These numbers describe this run's conversations with the sources, not the data: they are
kept out of ``report.json`` and the audit records (which stay the same bytes run after run)
and only go to the metrics file.
"""

from __future__ import annotations

from typing import Any

BUCKETS_S = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


def empty() -> dict[str, Any]:
    return {
        "buckets": [0] * len(BUCKETS_S),
        "count": 0,
        "sum": 0.0,
        "rate_limited": 0,
        "failures": 0,
        "breaker_open": 0,
    }


def add(stats: dict[str, dict[str, Any]], attempts: list[dict[str, Any]]) -> None:
    """Count requests (``Attempts.made`` rows) into ``stats`` (by source)."""
    for a in attempts:
        s = stats.setdefault(str(a["source"]), empty())
        outcome = a.get("outcome")
        if outcome == "breaker_open":
            s["breaker_open"] = 1
            continue
        seconds = float(a.get("seconds", 0.0))
        s["count"] += 1
        s["sum"] += seconds
        for i, bound in enumerate(BUCKETS_S):
            if seconds <= bound:
                s["buckets"][i] += 1
        if outcome == "429":
            s["rate_limited"] += 1
        elif outcome == "failure":
            s["failures"] += 1


def merge(into: dict[str, dict[str, Any]], other: dict[str, dict[str, Any]]) -> None:
    for source, s in other.items():
        t = into.setdefault(source, empty())
        t["buckets"] = [a + b for a, b in zip(t["buckets"], s["buckets"], strict=True)]
        for k in ("count", "rate_limited", "failures"):
            t[k] += s[k]
        t["sum"] += s["sum"]
        t["breaker_open"] = max(t["breaker_open"], s["breaker_open"])
