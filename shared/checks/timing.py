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
from typing import Any

WINDOW = 33
MIN_SAMPLES = 8
BUCKET_US = 10
_RANGE = 2**62  # beyond this a value is not a time (and would not fit the report's integers)


class Timing:
    __slots__ = ("_hist", "_last_exch", "_max", "_ordered", "_recent", "count", "threshold_us")

    def __init__(self, drift_ms: float) -> None:
        self.threshold_us = int(drift_ms * 1000)
        self._recent: deque[int] = deque()
        self._ordered: list[int] = []
        self._hist: dict[int, int] = {}
        self._max: int | None = None
        self._last_exch: int | None = None
        self.count = 0

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
        self.count += 1
        b = offset // BUCKET_US
        hist = self._hist
        hist[b] = hist.get(b, 0) + 1
        if self._max is None or offset > self._max:
            self._max = offset
        ordered = self._ordered
        n = len(ordered)
        if n >= MIN_SAMPLES:
            median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) // 2
            if abs(offset - median) > self.threshold_us:
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
        if not self.count or self._max is None:
            return None
        keys = sorted(self._hist)
        total = self.count
        out: dict[str, float] = {}
        for name, q in (("p50", 0.50), ("p99", 0.99)):
            rank = max(1, -(-total * int(q * 100) // 100))  # ceil(total * q)
            seen = 0
            for k in keys:
                seen += self._hist[k]
                if seen >= rank:
                    out[name] = round(k * BUCKET_US / 1000, 3)
                    break
        out["max"] = round(self._max / 1000, 3)
        return out
