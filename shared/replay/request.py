"""What a gap asks a replay source for: one stream's messages between two ids.

Pure: built from a :class:`~shared.model.Gap` the audit found, carried as JSON in a
sub-task's arguments (a reference, never data), read by whichever worker fetches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.model import Gap, StreamKey

MINUTE_US = 60_000_000
# Receive times of two recorders of one stream differ (clocks, network): a fill is asked for
# this much beyond the gap's own receive times on both sides.
MARGIN_US = 60_000_000
# The longest gap a fill is asked for (a Tardis answer is one minute; this is 60 of them).
MAX_MINUTES = 60


@dataclass(frozen=True, slots=True)
class FillRequest:
    key: StreamKey
    series: str  # a trade id series (Binance ``t``/``a``); "" for books
    after: int  # the last id applied before the break
    before: int  # the first id of the message applied after it
    link: int | None  # that message's link to its predecessor (prev-link venues), else None
    from_us: int | None  # receive time of the last message applied before the break
    to_us: int | None  # receive time of the message after it

    @classmethod
    def of(cls, key: StreamKey, gap: Gap) -> FillRequest | None:
        """The request for ``gap`` of stream ``key``; None when the gap cannot be asked for
        (no ids on one side, no receive time to look around)."""
        if not isinstance(gap.after, int) or not isinstance(gap.before, int):
            return None
        if gap.local_us is None and gap.from_us is None:
            return None
        return cls(key, gap.series, gap.after, gap.before, gap.link, gap.from_us, gap.local_us)

    @property
    def ident(self) -> tuple[StreamKey, str, int]:
        """What a fill is found by when the segment is audited again."""
        return self.key, self.series, self.after

    def minutes(self) -> list[int]:
        """Start of every minute (epoch µs) a Tardis-compatible source is asked for, the
        margin included; empty when the gap spans more than :data:`MAX_MINUTES`."""
        start = self.from_us if self.from_us is not None else self.to_us
        end = self.to_us if self.to_us is not None else self.from_us
        assert start is not None and end is not None
        first = (min(start, end) - MARGIN_US) // MINUTE_US
        last = (max(start, end) + MARGIN_US) // MINUTE_US
        if last - first + 1 > MAX_MINUTES + 2:
            return []
        return [m * MINUTE_US for m in range(first, last + 1)]

    def describe(self) -> str:
        k = self.key
        series = f" ({self.series} ids)" if self.series else ""
        return f"{k.exchange} {k.symbol} {k.channel}{series} after id {self.after}, before id {self.before}"

    def as_json(self) -> dict[str, Any]:
        return {
            "key": list(self.key),
            "series": self.series,
            # Ids beyond 2^53 stay exact as text.
            "after": str(self.after),
            "before": str(self.before),
            "link": None if self.link is None else str(self.link),
            "from_us": self.from_us,
            "to_us": self.to_us,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FillRequest:
        link = data.get("link")
        return cls(
            StreamKey(*data["key"]),
            data.get("series", ""),
            int(data["after"]),
            int(data["before"]),
            None if link is None else int(link),
            data.get("from_us"),
            data.get("to_us"),
        )
