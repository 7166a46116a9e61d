"""One rate limit and one circuit breaker per replay source, shared by every worker.

A :class:`Gate` is what a source client asks before each request:

- ``wait_turn(weight)`` reserves the next slot of the source's limit and sleeps until it.
  The limit is a GCRA schedule (a theoretical arrival time per budget), one for requests per
  second and one for request weight per minute (Binance's IP weight), both advanced in the
  same atomic step, so no two callers ever get the same slot and the source never sees more
  than its limit in any window;
- ``hold_off(seconds)`` (a 429's ``Retry-After``, a Binance 418 ban, a weight header near its
  budget) pushes the source's next allowed time for every caller;
- ``failed(why)`` / ``succeeded()`` drive the breaker: after ``threshold`` failures in a row it
  opens for ``cooldown_s`` and callers move on to the next source; after the cooldown one
  request may try again (half open), and its failure opens the breaker at once.

:class:`RedisGate` keeps that state in Redis (one Lua call per reservation, Redis' clock for
everyone); :class:`LocalGate` keeps it in memory for a run without a broker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis

# Keys expire when nobody used the source for this long.
STATE_TTL_MS = 3_600_000


# Requests are paced at this share of a limit: the margin absorbs the jitter between the
# moment a slot is granted and the moment the request reaches the source (scheduling, network),
# so the source never counts more than its limit in any window.
HEADROOM = 0.95


@dataclass(frozen=True, slots=True)
class Limit:
    """A source's budget: requests per second and request weight per minute (0: none)."""

    per_second: float = 5.0
    weight_per_minute: int = 0

    @property
    def request_interval_us(self) -> int:
        return int(1_000_000 / (self.per_second * HEADROOM)) if self.per_second > 0 else 0

    @property
    def weight_interval_us(self) -> int:
        return int(60_000_000 / (self.weight_per_minute * HEADROOM)) if self.weight_per_minute > 0 else 0


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    threshold: int = 5
    cooldown_s: float = 60.0


class Gate(Protocol):
    name: str

    def wait_turn(self, weight: int = 1) -> None: ...

    def hold_off(self, seconds: float) -> None: ...

    def failed(self, why: str) -> bool:
        """Count a failure (``why``: what went wrong); True when the breaker is open after it."""
        ...

    def succeeded(self) -> None: ...

    def open_reason(self) -> str | None:
        """While the breaker is open: the failure that opened it; else None."""
        ...


Sleep = Callable[[float], None]


class LocalGate:
    """The gate of one process (``retape audit --in-process``)."""

    def __init__(
        self,
        name: str,
        limit: Limit,
        breaker: BreakerPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.name = name
        self.limit = limit
        self.breaker = breaker or BreakerPolicy()
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._tat = 0.0
        self._wtat = 0.0
        self._hold = 0.0
        self._fails = 0
        self._open_until = 0.0
        self._tripped = False
        self._reason = ""

    def wait_turn(self, weight: int = 1) -> None:
        while True:
            with self._lock:
                now = self.clock()
                reserved = self._hold <= now
                if not reserved:
                    wait = self._hold - now
                else:
                    ri = self.limit.request_interval_us / 1e6
                    wi = self.limit.weight_interval_us / 1e6 * weight
                    slot = max(now, self._tat if ri else now, self._wtat if wi else now)
                    if ri:
                        self._tat = slot + ri
                    if wi:
                        self._wtat = slot + wi
                    wait = slot - now
            if wait > 0:
                self.sleep(wait)
            if reserved:
                return

    def hold_off(self, seconds: float) -> None:
        with self._lock:
            self._hold = max(self._hold, self.clock() + seconds)

    def failed(self, why: str) -> bool:
        with self._lock:
            now = self.clock()
            self._fails += 1
            if self._tripped or self._fails >= self.breaker.threshold:
                self._tripped = True
                self._fails = 0
                self._open_until = now + self.breaker.cooldown_s
                self._reason = why
            return self._open_until > now

    def succeeded(self) -> None:
        with self._lock:
            self._fails = 0
            self._tripped = False

    def open_reason(self) -> str | None:
        with self._lock:
            return self._reason if self._open_until > self.clock() else None


# KEYS: request schedule, weight schedule, hold-until.  ARGV: request interval (µs), weight
# interval per unit (µs), weight, ttl (ms).  Reserves the next slot of both schedules and
# returns how long to wait for it (µs); while a hold is on, returns the hold's remaining time
# as a negative number and reserves nothing.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local hold = tonumber(redis.call('GET', KEYS[3]) or '0')
if hold > now then return -(hold - now) end
local ri = tonumber(ARGV[1])
local wi = tonumber(ARGV[2]) * tonumber(ARGV[3])
local slot = now
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local wtat = tonumber(redis.call('GET', KEYS[2]) or '0')
if ri > 0 and tat > slot then slot = tat end
if wi > 0 and wtat > slot then slot = wtat end
if ri > 0 then redis.call('SET', KEYS[1], slot + ri, 'PX', ARGV[4]) end
if wi > 0 then redis.call('SET', KEYS[2], slot + wi, 'PX', ARGV[4]) end
return slot - now
"""

# KEYS: hold-until.  ARGV: seconds (µs).  Pushes the hold to now + seconds (never earlier).
_HOLD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_ = now + tonumber(ARGV[1])
local hold = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ > hold then
  redis.call('SET', KEYS[1], until_, 'PX', math.floor(tonumber(ARGV[1]) / 1000) + 1000)
end
return until_
"""

# KEYS: failures, open-until, tripped, reason.  ARGV: threshold, cooldown (µs), ttl (ms), why.
# Returns 1 when the breaker is open after this failure.
_FAILED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local fails = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if redis.call('EXISTS', KEYS[3]) == 1 or fails >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[3], 1, 'PX', ARGV[3])
  redis.call('SET', KEYS[1], 0, 'PX', ARGV[3])
  redis.call('SET', KEYS[2], now + tonumber(ARGV[2]), 'PX', ARGV[3])
  redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[3])
end
local open_until = tonumber(redis.call('GET', KEYS[2]) or '0')
if open_until > now then return 1 end
return 0
"""

# KEYS: open-until, reason.  The reason while the breaker is open, else false (nil).
_OPEN_REASON = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local open_until = tonumber(redis.call('GET', KEYS[1]) or '0')
if open_until > now then return redis.call('GET', KEYS[2]) or '' end
return false
"""

# KEYS: hold-until.  How long a hold still lasts (µs, 0: none).
_HELD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local hold = tonumber(redis.call('GET', KEYS[1]) or '0')
if hold > now then return hold - now end
return 0
"""


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:120]


class RedisGate:
    """The gate of a source as every worker attached to one Redis sees it."""

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        limit: Limit,
        breaker: BreakerPolicy | None = None,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.client = client
        self.name = name
        self.limit = limit
        self.breaker = breaker or BreakerPolicy()
        self.sleep = sleep
        base = f"retape:replay:{_slug(name)}"
        self.keys = {
            "tat": f"{base}:tat",
            "wtat": f"{base}:wtat",
            "hold": f"{base}:hold",
            "fails": f"{base}:fails",
            "open": f"{base}:open",
            "tripped": f"{base}:tripped",
            "reason": f"{base}:reason",
        }
        self._reserve: Any = client.register_script(_RESERVE)
        self._hold: Any = client.register_script(_HOLD)
        self._failed: Any = client.register_script(_FAILED)
        self._open_reason: Any = client.register_script(_OPEN_REASON)
        self._held: Any = client.register_script(_HELD)

    def wait_turn(self, weight: int = 1) -> None:
        k = self.keys
        while True:
            wait_us = int(
                self._reserve(
                    keys=[k["tat"], k["wtat"], k["hold"]],
                    args=[
                        self.limit.request_interval_us,
                        self.limit.weight_interval_us,
                        weight,
                        STATE_TTL_MS,
                    ],
                )
            )
            if wait_us == 0:
                return
            if wait_us > 0:
                # A slot later on: a hold set meanwhile (another worker's 429) still comes first.
                self.sleep(wait_us / 1e6)
                held = int(self._held(keys=[k["hold"]]))
                if not held:
                    return
                wait_us = -held
            self.sleep(-wait_us / 1e6)  # held off: then reserve afresh

    def hold_off(self, seconds: float) -> None:
        self._hold(keys=[self.keys["hold"]], args=[int(seconds * 1e6)])

    def failed(self, why: str) -> bool:
        k = self.keys
        cooldown_us = int(self.breaker.cooldown_s * 1e6)
        return bool(
            self._failed(
                keys=[k["fails"], k["open"], k["tripped"], k["reason"]],
                args=[self.breaker.threshold, cooldown_us, STATE_TTL_MS, why],
            )
        )

    def succeeded(self) -> None:
        self.client.delete(self.keys["fails"], self.keys["tripped"])

    def open_reason(self) -> str | None:
        got = self._open_reason(keys=[self.keys["open"], self.keys["reason"]])
        if got is None:
            return None
        return got.decode() if isinstance(got, bytes) else str(got)
