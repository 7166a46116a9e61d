"""Asking a source through its gate: rate limit, ``Retry-After``, backoff, breaker.

Tardis' own clients try up to about 30 times, waiting min(2^n, 120) s plus jitter, add 60 s
after a 429 and never retry 401/403/404.  Here: the same bounds with *full* jitter (a random
wait between 0 and the bound, which spreads many workers best), a 429's ``Retry-After`` is
honoured exactly and for every worker of the source (the gate holds the whole source off),
a 429 without one holds it off 60 s, and the breaker moves the caller on to the next source
when one keeps failing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx

from shared.errors import (
    AuthFailed,
    RateLimited,
    RetapeError,
    TransientError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from shared.replay.limits import Gate

T = TypeVar("T")


class SourceFailed(RetapeError):
    """A source could not answer (down, breaker open, tries used up, refused the key, has no
    such data): the message is the reason the report gives, and the next source is tried."""


class NoData(SourceFailed):
    """The source does not have what was asked (404, an exchange it does not serve)."""


class BadAnswer(RetapeError):
    """The source answered, but not with what its protocol promises (an HTML page, a line
    that is no record): trying again is not expected to help."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    tries: int = 30
    base_s: float = 1.0
    cap_s: float = 120.0
    no_retry_after_s: float = 60.0  # a 429 that does not say how long

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt)]."""
        return rng.uniform(0.0, min(self.cap_s, self.base_s * (2 ** min(attempt, 30))))


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (delta-seconds or an HTTP date); None if absent or
    unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


@contextmanager
def upstream(name: str) -> Iterator[None]:
    """httpx's timeouts and failed connections (a body cut off included) in the block, as the
    transient errors :func:`call` tries again."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"{name}: timed out ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        raise UpstreamUnavailable(f"{name}: connection failed ({type(exc).__name__}: {exc})") from None


def raise_if_transient(response: httpx.Response, name: str) -> None:
    """A 429 (with its ``Retry-After``), a 408 or a 5xx as the transient error it is."""
    status = response.status_code
    if status == 429:
        raise RateLimited(f"{name}: HTTP 429", retry_after_seconds(response.headers.get("retry-after")))
    if status >= 500 or status == 408:
        raise UpstreamUnavailable(f"{name}: HTTP {status}")


def refused(name: str, status: int, env: str, keyed: bool, needs: str = "a key") -> AuthFailed:
    """A 401/403, in one line naming the variable that holds (or should hold) the key."""
    if keyed:
        return AuthFailed(f"{name} refused the key in {env} (HTTP {status})")
    return AuthFailed(f"{name} needs {needs}: set {env} (HTTP {status})")


@dataclass
class Attempts:
    """Every request made for one fill, for the replay metrics."""

    source: str
    made: list[dict[str, Any]] = field(default_factory=list)

    def note(self, seconds: float, outcome: str) -> None:
        self.made.append({"source": self.source, "seconds": round(seconds, 6), "outcome": outcome})


def call(
    gate: Gate,
    policy: RetryPolicy,
    request: Callable[[], T],
    attempts: Attempts,
    weight: int = 1,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``request()`` through ``gate`` until it answers, or :class:`SourceFailed` saying why not.

    ``request`` raises :class:`RateLimited` (a 429 or a venue's limit error), another
    :class:`TransientError` (5xx, timeout, connection lost, a truncated body), :class:`AuthFailed`,
    :class:`NoData` or :class:`BadAnswer`; anything else is a bug and escapes."""
    rng = rng or random.Random()
    failures = 0
    last: str | None = None
    for _ in range(policy.tries):
        opened_by = gate.open_reason()
        if opened_by is not None:
            attempts.note(0.0, "breaker_open")
            raise SourceFailed(f"{opened_by} (circuit breaker open)")
        gate.wait_turn(weight)
        started = time.monotonic()
        try:
            result = request()
        except RateLimited as exc:
            attempts.note(time.monotonic() - started, "429")
            wait = exc.retry_after if exc.retry_after is not None else policy.no_retry_after_s
            gate.hold_off(wait)
            last = str(exc)
            continue
        except TransientError as exc:
            attempts.note(time.monotonic() - started, "failure")
            last = str(exc)
            failures += 1
            if gate.failed(str(exc)):
                attempts.note(0.0, "breaker_open")
                raise SourceFailed(f"{gate.open_reason() or exc} (circuit breaker open)") from None
            sleep(policy.backoff(failures, rng))
            continue
        except AuthFailed as exc:
            attempts.note(time.monotonic() - started, "refused")
            raise SourceFailed(str(exc)) from None
        except (NoData, BadAnswer) as exc:
            attempts.note(time.monotonic() - started, "bad" if isinstance(exc, BadAnswer) else "absent")
            raise
        attempts.note(time.monotonic() - started, "ok")
        gate.succeeded()
        return result
    raise SourceFailed(f"no answer after {policy.tries} tries (last: {last})")
