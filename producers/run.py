"""Running a job from the submitting side: connect, submit, serve the data, wait, collect.

Used by ``retape audit`` (which then writes the outputs itself: the segments' results come
back through the broker) and by ``retape produce`` (which serves the data until every
segment is finished; an aggregate task writes the outputs).
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit

import redis

from producers.feeder import Feeder
from shared import jobflow, lifecycle
from shared.errors import BrokerLost, BrokerUnreachable, JobIncomplete, LeaseLost
from shared.jobs import Field, JobPlan, JobState, Writer
from shared.jobstore import LEASE_S, JobStore
from shared.messaging import sender_for

POKE_WAIT_S = 0.5
NO_WORKER_NOTICE_S = 30.0
CONNECT_TIMEOUT_S = 5.0


def display_url(url: str) -> str:
    """The broker's address without its password (never printed)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a number: say so rather than fail
        port = ":?"
    path = parts.path if parts.path not in ("", "/") else ""
    return f"{parts.scheme}://{host}{port}{path}"


def connect(url: str) -> redis.Redis:
    """A client that has answered a PING; :class:`BrokerUnreachable` saying why not."""
    where = display_url(url)
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_keepalive=True, health_check_interval=30
        )
        client.ping()
    except redis.AuthenticationError as exc:
        if "required" in str(exc).lower():
            raise BrokerUnreachable(
                f"the broker at {where} needs a password: put it in the URL (redis://:PASSWORD@host:port/0)"
            ) from None
        raise BrokerUnreachable(f"the broker at {where} refused the password (wrong password)") from None
    except redis.ConnectionError as exc:
        text = str(exc)
        if "refused" in text.lower():
            why = "nothing listens there (connection refused)"
        elif "name" in text.lower() and ("resolution" in text.lower() or "known" in text.lower()):
            why = "its host name does not resolve"
        else:
            why = text
        raise BrokerUnreachable(f"could not connect to the broker at {where}: {why}") from None
    except redis.TimeoutError:
        raise BrokerUnreachable(
            f"could not connect to the broker at {where}: no answer within {CONNECT_TIMEOUT_S:g} s"
        ) from None
    except (ValueError, redis.RedisError) as exc:
        raise BrokerUnreachable(f"the broker URL {where} cannot be used: {exc}") from None
    return client


def lost(url: str, job: str, exc: BaseException) -> BrokerLost:
    return BrokerLost(
        f"lost the connection to the broker at {display_url(url)} while job {job} was running "
        f"({type(exc).__name__}). retape keeps a job's state in the broker only while it runs: "
        "run the same command again (it starts the job afresh and writes the same results)"
    )


class Progress:
    """``segments done/total, messages, messages per second`` on one line of stderr."""

    def __init__(
        self, job: str, out: TextIO | None = None, every_s: float = 0.5, unit: str = "messages"
    ) -> None:
        self.job = job
        self.unit = unit
        self.out = out if out is not None else sys.stderr
        self.every_s = every_s
        self.started = time.monotonic()
        self.shown = 0.0
        self.last_done: object = None
        self.tty = self.out.isatty()

    def show(self, state: dict[str, Any], force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.shown < self.every_s:
            return
        self.shown = now
        done, total = state["segments_done"], state["segments_total"]
        messages = int(state.get("messages", 0))
        rate = messages / max(now - self.started, 1e-6)
        line = f"job {self.job[:12]}: segments {done}/{total}, {messages:,} {self.unit}, {rate:,.0f}/s"
        if state.get("dead_letters"):
            line += f", {state['dead_letters']} dead-lettered"
        if self.tty:
            self.out.write("\r" + line + "\033[K")
        elif done != self.last_done or force:
            self.out.write(line + "\n")
        self.last_done = done
        self.out.flush()

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()


@dataclass
class Waiting:
    """How the submitter waits."""

    progress: bool = False
    timeout_s: float | None = None  # give up (exit 3) after this long
    # say so when no worker took a task by then
    notice_after_s: float = field(
        default_factory=lambda: float(os.environ.get("RETAPE_NO_WORKER_NOTICE_S", NO_WORKER_NOTICE_S))
    )
    alive: Callable[[], None] | None = None  # raises when the local workers died
    err: TextIO = field(default_factory=lambda: sys.stderr)


class Submitter:
    """One job seen from the producer that submitted it (and serves its data)."""

    def __init__(self, client: redis.Redis, url: str, job: str, plan: JobPlan) -> None:
        self.client = client
        self.url = url
        self.job = job
        self.plan = plan
        self.store = JobStore(client, job)  # at the job's epoch once submitted
        self.owner = f"{lifecycle.identity()}:{secrets.token_hex(4)}"
        self.feeder: Feeder | None = None

    def submit(self, writer: Writer, rerun_done: bool) -> jobflow.Submission:
        """Submit the job; a lease held by a command of this host that is gone (killed) is
        taken at once rather than after its expiry."""
        sender = sender_for(self.url)
        submission = jobflow.submit(self.store, sender, self.plan, writer, self.owner, rerun_done)
        if submission.outcome is jobflow.Outcome.SERVED_ELSEWHERE:
            holder = self.store.lease_holder()
            if holder and lifecycle.gone_here(holder) and self.store.release_lease(holder):
                submission = jobflow.submit(self.store, sender, self.plan, writer, self.owner, rerun_done)
        if submission.serving:
            self.store = submission.store
            self.feeder = Feeder(self.client, self.job, int(self.store.epoch or 0), self.plan.files)
        return submission

    def submit_when_free(self, writer: Writer) -> jobflow.Submission:
        """Submit (running the job again if it finished); when another submitter holds the
        job, wait for its lease to run out (a command on another host that died holds it for
        up to its expiry), at most twice the lease."""
        deadline = time.monotonic() + 2 * LEASE_S
        submission = self.submit(writer, rerun_done=True)
        if submission.outcome is jobflow.Outcome.SERVED_ELSEWHERE:
            sys.stderr.write(
                f"retape: job {self.job[:12]} is held by another retape command; "
                f"waiting up to {2 * LEASE_S} s for it to let go\n"
            )
        while submission.outcome is jobflow.Outcome.SERVED_ELSEWHERE and time.monotonic() < deadline:
            time.sleep(0.5)
            submission = self.submit(writer, rerun_done=True)
        return submission

    def release(self) -> None:
        if self.feeder is not None:
            self.feeder.close()
        self.store.release_lease(self.owner)

    def cancel(self) -> bool:
        """Give the job up, if this submitter still holds it: queued tasks will do nothing."""
        return jobflow.cancel(self.store, self.owner)

    def wait_for_segments(self, how: Waiting) -> None:
        """Serve the data until every segment is finished."""
        store = self.store
        unit = "records" if self.plan.kind == "ledger" else "messages"
        bar = Progress(self.job, unit=unit) if how.progress else None
        watch = _WorkerWatch(self, how)
        started = renewed = time.monotonic()
        while True:
            if time.monotonic() - renewed > LEASE_S / 3:
                if not store.take_lease(self.owner):
                    raise LeaseLost(f"job {self.job} was taken over by another producer; it goes on there")
                renewed = time.monotonic()
            store.wait(POKE_WAIT_S)
            if self.feeder is not None:
                self.feeder.pump()
            status = self._running_status()
            if how.alive is not None:
                how.alive()
            if bar is not None:
                bar.show(status)
            if status["segments_done"] >= status["segments_total"]:
                if bar is not None:
                    bar.show(status, force=True)
                    bar.close()
                return
            watch.check(status)
            if how.timeout_s is not None and time.monotonic() - started >= how.timeout_s:
                raise JobIncomplete(f"gave up after {how.timeout_s:g} s (--timeout)")

    def _running_status(self) -> dict[str, Any]:
        status = self.store.status()
        if status["state"] == "unknown":
            raise BrokerLost(
                f"job {self.job} vanished from the broker at {display_url(self.url)} while it ran "
                "(restarted or flushed?): run the same command again"
            )
        if status["state"] != JobState.RUNNING.value or not self.store.running():
            raise JobIncomplete(f"job {self.job} ended while it was served ({status['state']})")
        return status

    def wait_for_outputs(self, timeout_s: float) -> JobState | None:
        """After the segments: wait (at most ``timeout_s``) for the aggregator to write the
        outputs; the job's final state, or None when it is still running."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.store.state()
            if state is not JobState.RUNNING:
                return state
            self.store.wait(POKE_WAIT_S)
        return None

    def collect(self, out_dir: str) -> dict[str, Any]:
        return jobflow.collect(self.store, self.plan, out_dir)

    def collect_partial(self, out_dir: str, reason: str) -> dict[str, Any]:
        """Write what the finished segments found, the others reported as not audited; then
        give the job up."""
        found = self.store.final_results(self.plan.segments)
        report = jobflow.write_with_failures(self.plan, found, out_dir, reason)
        self.cancel()
        return report


class _WorkerWatch:
    """Says once when no worker takes the job's tasks: none taken at all after
    ``notice_after_s``, or no progress that long and no worker answering a ping."""

    def __init__(self, submitter: Submitter, how: Waiting) -> None:
        self.submitter = submitter
        self.how = how
        self.since = time.monotonic()
        self.last: tuple[int, int] | None = None
        self.said = False

    def check(self, status: dict[str, Any]) -> None:
        store = self.submitter.store
        progress = (store.count(Field.STARTED), int(status["segments_done"]))
        if progress != self.last:
            self.last, self.since = progress, time.monotonic()
            return
        if self.said or time.monotonic() - self.since < self.how.notice_after_s:
            return
        where = display_url(self.submitter.url)
        answering = self._workers_answering()
        if progress[0] == 0:
            busy = f" ({answering} worker(s) answer, busy with other work?)" if answering else ""
            self._say(
                f"no worker has taken a task of job {self.submitter.job[:12]} for "
                f"{self.how.notice_after_s:g} s{busy}: start one with `retape worker` attached to "
                f"{where} (or give --workers N)"
            )
        elif answering == 0:
            self._say(
                f"job {self.submitter.job[:12]} has made no progress for {self.how.notice_after_s:g} s "
                f"and no worker answers on {where}: start one with `retape worker` (the job waits)"
            )

    def _workers_answering(self) -> int:
        try:
            return len(sender_for(self.submitter.url).app.control.ping(timeout=1.0) or [])
        except Exception:  # a ping that fails tells nothing either way
            return 0

    def _say(self, message: str) -> None:
        self.said = True
        self.how.err.write(f"\nretape: {message}\n")
        self.how.err.flush()


def write_not_audited(plan: JobPlan, out_dir: str, reason: str) -> dict[str, Any]:
    """Outputs that say every input of the job went unaudited, and why (the broker is gone)."""
    return jobflow.write_with_failures(plan, [None] * plan.segments, out_dir, reason)
