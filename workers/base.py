"""The one guarded base task: delivery bookkeeping and retry decisions for every task.

Every start of a task is counted (:class:`shared.jobstore.DeliveryGuard`).  What the task
raises decides what happens next, by type (:mod:`shared.errors`):

- nothing: the count is cleared;
- :class:`~shared.errors.PermanentError`: dead-lettered at once, with its reason;
- :class:`~shared.errors.TransientError`: tried again after its ``retry_after`` (exactly)
  or after an exponential backoff with full jitter; the start is given back, so only the
  larger transient budget limits it (none for a producer that is not serving yet: the job
  itself expires if nobody comes back for it);
- a lost broker: tried again with backoff;
- the job not running at the task's epoch any more: nothing to do;
- anything else: tried again with backoff until the task has had ``max_tries`` starts;
- a task that kills its worker is delivered again by the broker and counted the same way.

A dead-lettered task calls :meth:`GuardedTask.bury`, so its job goes on without it (a
segment is reported as not audited, a sub-task's answer says it failed).  Burying is
idempotent, so a burial interrupted by a crash is simply done again.  Logs name the
failure in one line; the traceback goes to the debug log only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from typing import Any

import redis
from celery import Task

from shared.errors import FeederGone, PermanentError, Superseded, TransientError
from shared.jobstore import DeliveryGuard, JobStore, NotRunning
from shared.messaging import MAX_COUNTDOWN_S, CelerySender

log = logging.getLogger("retape.workers")

MAX_TRIES = 3
BACKOFF_BASE_S = 1.0

_CLIENTS: dict[tuple[int, str], redis.Redis] = {}


def backoff_s(tries: int, base: float = BACKOFF_BASE_S, cap: float = MAX_COUNTDOWN_S) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**tries)]."""
    return random.uniform(0, min(cap, base * 2 ** min(tries, 30)))


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class GuardedTask(Task):
    """Base of every retape task; its first two arguments are the job id and the epoch."""

    max_tries = MAX_TRIES

    def client(self) -> redis.Redis:
        """One connection pool per worker process (prefork children do not share sockets)."""
        url = str(self.app.conf.broker_url)
        key = (os.getpid(), url)
        found = _CLIENTS.get(key)
        if found is None:
            found = _CLIENTS[key] = redis.Redis.from_url(url, health_check_interval=30)
        return found

    def store(self, job: str, epoch: int) -> JobStore:
        return JobStore(self.client(), job, epoch)

    def sender(self) -> CelerySender:
        return CelerySender(self.app)

    def queue_name(self) -> str:
        info = self.request.delivery_info or {}
        return str(info.get("routing_key") or self.queue or "")

    def bury(self, args: tuple[Any, ...], reason: str) -> None:
        """The task was dead-lettered: let its job go on without it (idempotent)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._guarded(args, kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # The broker went away, in the task or in its bookkeeping: deliver it again later.
            log.warning("%s %s: lost the broker (%s); trying again", self.name, args, exc)
            raise self.retry(exc=exc, countdown=backoff_s(self.request.retries), max_retries=None) from exc

    def _guarded(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        task_id = str(self.request.id)
        guard = DeliveryGuard(self.client(), max_tries=self.max_tries)
        if not guard.admit(task_id, self.name, list(args), self.queue_name()):
            reason = guard.reason(task_id)
            log.error("%s %s dead-lettered after %d tries: %s", self.name, args, self.max_tries, reason)
            self._bury(args, f"{reason} ({self.max_tries} tries)")
            return None
        try:
            out = self.run(*args, **kwargs)
        except (Superseded, NotRunning) as exc:
            log.info("%s %s: %s", self.name, args, exc)
            guard.done(task_id)
            return None
        except PermanentError as exc:
            reason = _reason(exc)
            log.error("%s %s failed for good: %s", self.name, args, reason)
            guard.bury(task_id, self.name, list(args), self.queue_name(), reason)
            self._bury(args, reason)
            return None
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except TransientError as exc:
            failures = guard.give_back(task_id)
            guard.record_error(task_id, _reason(exc))
            if failures > guard.max_transient and not isinstance(exc, FeederGone):
                reason = f"{_reason(exc)} ({failures} transient failures)"
                guard.bury(task_id, self.name, list(args), self.queue_name(), reason)
                self._bury(args, reason)
                return None
            wait = exc.retry_after if exc.retry_after is not None else backoff_s(failures)
            log.warning("%s %s: %s; trying again in %.1f s", self.name, args, _reason(exc), wait)
            raise self.retry(exc=exc, countdown=min(wait, MAX_COUNTDOWN_S), max_retries=None) from exc
        except Exception as exc:
            guard.record_error(task_id, _reason(exc))
            log.error("%s %s failed: %s", self.name, args, _reason(exc))
            log.debug("%s %s failed", self.name, args, exc_info=True)
            raise self.retry(exc=exc, countdown=backoff_s(self.request.retries), max_retries=None) from exc
        guard.done(task_id)
        return out

    def _bury(self, args: tuple[Any, ...], reason: str) -> None:
        with contextlib.suppress(NotRunning):  # the job ended meanwhile: nobody waits for it
            self.bury(args, reason)
