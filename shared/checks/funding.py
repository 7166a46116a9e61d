"""Funding continuity: settlement times move forward by one interval; rates stay within the cap."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shared.numbers import order_key, to_decimal


class FundingCheck:
    __slots__ = ("cap", "interval_us", "last_time")

    def __init__(self, interval_us: int | None, cap: Decimal | None) -> None:
        self.interval_us = interval_us
        self.cap = cap
        self.last_time: int | None = None

    def check(self, funding_time_us: int | None, rate: Any) -> list[tuple[str, dict[str, Any]]]:
        """Findings as (fault kind, detail)."""
        out: list[tuple[str, dict[str, Any]]] = []
        if rate is not None:
            if order_key(rate) is None:
                out.append(("invalid_value", {"field": "funding_rate", "value": str(rate)}))
            elif self.cap is not None and abs(to_decimal(rate)) > self.cap:
                out.append(
                    (
                        "funding_discontinuity",
                        {"reason": "rate beyond cap", "rate": str(rate), "cap": str(self.cap)},
                    )
                )
        if funding_time_us is None:
            return out
        last = self.last_time
        if last is not None:
            if funding_time_us < last:
                out.append(
                    (
                        "funding_discontinuity",
                        {
                            "reason": "funding time moved backwards",
                            "funding_time_us": funding_time_us,
                            "previous_us": last,
                        },
                    )
                )
                return out  # keep the later time as the reference
            step = funding_time_us - last
            if step:
                interval = self.interval_us
                if interval is None or step < interval:
                    # A symbol on a shorter schedule (Binance 4h): learn it.
                    self.interval_us = step
                elif step > interval:
                    out.append(
                        (
                            "funding_discontinuity",
                            {
                                "reason": "settlement skipped",
                                "funding_time_us": funding_time_us,
                                "previous_us": last,
                                "skipped": step // interval - 1 if step % interval == 0 else None,
                            },
                        )
                    )
        self.last_time = funding_time_us
        return out

    def continues(self, funding_time_us: int) -> bool:
        """Whether a funding time read from another input carries on this schedule (the same
        or the next settlement) rather than starting another recording of the stream."""
        last = self.last_time
        if last is None:
            return True
        step = funding_time_us - last
        return step >= 0 and (self.interval_us is None or step <= self.interval_us)
