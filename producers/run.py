"""Running a job from the submitting side: connect, submit, serve the data, wait, collect.

Used by ``retape audit`` (which then writes the outputs itself: the segments' results come
back through the broker) and by ``retape produce`` (which serves the data until every
segment is finished; an aggregate task writes the outputs).
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit

import redis

from producers.feeder import Feeder
from shared import jobflow
from shared.errors import BrokerLost, BrokerUnreachable, JobIncomplete, PipelineError
from shared.jobs import Event, Field, JobPlan, JobState, Writer, kind_named
from shared.jobstore import LEASE_S, JobStore
from shared.messaging import sender_for

POKE_WAIT_S = 0.5
NO_WORKER_NOTICE_S = 30.0
CONNECT_TIMEOUT_S = 5.0


def display_url(url: str) -> str:
    """The broker's address without its password (never printed)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
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

    def __init__(self, job: str, out: TextIO | None = None, every_s: float = 0.5) -> None:
        self.job = job
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
        line = f"job {self.job[:12]}: segments {done}/{total}, {messages:,} messages, {rate:,.0f} msg/s"
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
        self.store = JobStore(client, job)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.feeder = Feeder(client, job, plan.files)

    def submit(self, writer: Writer, rerun_done: bool) -> jobflow.Submission:
        """Submit the job; a lease held by a command of this host that is gone (killed) is
        taken at once rather than after its expiry."""
        sender = sender_for(self.url)
        submission = jobflow.submit(self.store, sender, self.plan, writer, self.owner, rerun_done)
        if submission.outcome is jobflow.Outcome.SERVED_ELSEWHERE:
            holder = self.store.lease_holder()
            if holder and _dead_here(holder) and self.store.release_dead_lease(holder):
                submission = jobflow.submit(self.store, sender, self.plan, writer, self.owner, rerun_done)
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
        self.feeder.close()
        self.store.release_lease(self.owner)

    def wait_for_segments(self, how: Waiting) -> None:
        """Serve the data until every segment is finished."""
        store = self.store
        bar = Progress(self.job) if how.progress else None
        started = time.monotonic()
        renewed = started
        noticed = False
        while True:
            now = time.monotonic()
            if now - renewed > LEASE_S / 3:
                if not store.take_lease(self.owner):
                    raise PipelineError(f"job {self.job} was taken over by another producer")
                renewed = now
            store.wait(POKE_WAIT_S)
            self.feeder.pump()
            if store.next_event() is Event.FAILED:
                raise PipelineError(f"job {self.job} failed: {store.get(Field.ERROR) or 'see retape status'}")
            status = store.status()
            if status["state"] != JobState.RUNNING.value:
                if status["state"] == "unknown":
                    raise BrokerLost(
                        f"job {self.job} vanished from the broker at {display_url(self.url)} while it ran "
                        "(restarted or flushed?): run the same command again"
                    )
                raise JobIncomplete(f"job {self.job} is {status['state']}")
            if how.alive is not None:
                how.alive()
            if bar is not None:
                bar.show(status)
            if status["segments_done"] >= status["segments_total"]:
                if bar is not None:
                    bar.show(status, force=True)
                    bar.close()
                return
            elapsed = time.monotonic() - started
            if not noticed and elapsed >= how.notice_after_s and store.count(Field.STARTED) == 0:
                noticed = True
                how.err.write(
                    f"\nretape: no worker has taken a task of job {self.job[:12]} for "
                    f"{how.notice_after_s:g} s: start one with `retape worker` attached to "
                    f"{display_url(self.url)} (or give --workers N)\n"
                )
                how.err.flush()
            if how.timeout_s is not None and elapsed >= how.timeout_s:
                raise JobIncomplete(f"gave up after {how.timeout_s:g} s (--timeout)")

    def collect(self, out_dir: str) -> dict[str, Any]:
        return jobflow.collect(self.store, self.plan, out_dir)

    def collect_partial(self, out_dir: str, reason: str) -> dict[str, Any]:
        """Write what the finished segments found; the others are reported as not audited."""
        kind = kind_named(self.plan.kind)
        found = self.store.final_results(self.plan.segments)
        results = [
            jobflow.decode_step(r).result if r is not None else kind.failed_segment(self.plan, n, reason)
            for n, r in enumerate(found)
        ]
        report = kind.write_outputs(self.plan, results, out_dir)
        jobflow.cancel(self.store)
        return report


def _dead_here(holder: str) -> bool:
    """The lease ``holder`` (``host:pid:token``) is a process of this host that is gone."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def write_not_audited(plan: JobPlan, out_dir: str, reason: str) -> dict[str, Any]:
    """Outputs that say every input of the job went unaudited, and why (the broker is gone)."""
    kind = kind_named(plan.kind)
    results = [kind.failed_segment(plan, n, reason) for n in range(plan.segments)]
    return kind.write_outputs(plan, results, out_dir)
