"""Clock checks: receive latency statistics and timestamp drift.

The offset of a message is its local receive time minus its exchange time.  A message
drifts when its offset departs from the running median of the previous ``WINDOW``
offsets by more than the threshold, or when its exchange time goes backwards.  The median
needs ``MIN_SAMPLES`` offsets first.  Every offset enters the window: one outlier cannot
move a median, and a lasting shift (a recorder's clock step) is reported for about half a
window and then becomes the new normal.  Latency percentiles come from a histogram with
``BUCKET_US`` resolution, so memory depends on the spread of offsets, not the input length.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass, field
from typing import Any

WINDOW = 33
MIN_SAMPLES = 8
BUCKET_US = 10
_RANGE = 2**62  # beyond this a value is not a time (and would not fit the report's integers)


@dataclass(slots=True)
class Latency:
    """Receive-latency statistics of a stream: a histogram that merges exactly across parts."""

    hist: dict[int, int] = field(default_factory=dict)  # bucket (offset // BUCKET_US) -> count
    count: int = 0
    max_us: int | None = None

    def add(self, offset: int) -> None:
        b = offset // BUCKET_US
        hist = self.hist
        hist[b] = hist.get(b, 0) + 1
        self.count += 1
        if self.max_us is None or offset > self.max_us:
            self.max_us = offset

    def merge(self, other: Latency) -> None:
        for b, n in other.hist.items():
            self.hist[b] = self.hist.get(b, 0) + n
        self.count += other.count
        if other.max_us is not None and (self.max_us is None or other.max_us > self.max_us):
            self.max_us = other.max_us

    def percentiles_ms(self) -> dict[str, float] | None:
        if not self.count or self.max_us is None:
            return None
        keys = sorted(self.hist)
        total = self.count
        out: dict[str, float] = {}
        for name, pct in (("p50", 50), ("p99", 99)):
            rank = max(1, -(-total * pct // 100))  # ceil(total * pct / 100)
            seen = 0
            for k in keys:
                seen += self.hist[k]
                if seen >= rank:
                    out[name] = round(k * BUCKET_US / 1000, 3)
                    break
        out["max"] = round(self.max_us / 1000, 3)
        return out

    def as_json(self) -> dict[str, Any]:
        return {"hist": sorted(self.hist.items()), "count": self.count, "max_us": self.max_us}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Latency:
        return cls({int(b): int(n) for b, n in data["hist"]}, int(data["count"]), data["max_us"])


RATE_THRESHOLD_US = 100_000  # the drift rate data teams quote: offsets over 100 ms from the median


class Timing:
    __slots__ = ("_last_exch", "_ordered", "_recent", "compared", "latency", "over_100ms", "threshold_us")

    def __init__(self, drift_ms: float) -> None:
        self.threshold_us = int(drift_ms * 1000)
        self._recent: deque[int] = deque()
        self._ordered: list[int] = []
        self._last_exch: int | None = None
        self.latency = Latency()
        # Messages whose offset was compared with a median, and those over 100 ms from it.
        self.compared = 0
        self.over_100ms = 0

    def new_recording(self) -> None:
        """Another recording follows: its clocks are not compared with this one's."""
        self._last_exch = None
        self._recent.clear()
        self._ordered.clear()

    def check(self, local_us: int | None, exch_us: int | None) -> dict[str, Any] | None:
        """Record one message in sequence order; return drift details, or None."""
        if exch_us is None or not -_RANGE < exch_us < _RANGE:
            return None
        if local_us is not None and not -_RANGE < local_us < _RANGE:
            local_us = None
        finding: dict[str, Any] | None = None
        last = self._last_exch
        if last is not None and exch_us < last:
            finding = {"reason": "exchange time went backwards", "exchange_us": exch_us, "previous_us": last}
        else:
            self._last_exch = exch_us
        if local_us is None:
            return finding
        offset = local_us - exch_us
        self.latency.add(offset)
        ordered = self._ordered
        n = len(ordered)
        if n >= MIN_SAMPLES:
            median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) // 2
            departs = abs(offset - median)
            self.compared += 1
            if departs > RATE_THRESHOLD_US:
                self.over_100ms += 1
            if departs > self.threshold_us:
                if finding is None:
                    finding = {"reason": "offset departs from the running median"}
                finding.update(offset_ms=offset / 1000, median_ms=median / 1000)
        recent = self._recent
        recent.append(offset)
        insort(ordered, offset)
        if len(recent) > WINDOW:
            old = recent.popleft()
            del ordered[bisect_left(ordered, old)]
        return finding

    def latency_ms(self) -> dict[str, float] | None:
        return self.latency.percentiles_ms()
