"""Running a job to the end: submit, serve its data, wait for the aggregator, show progress.

Used by ``retape audit`` (with the embedded broker or a real one) and by ``retape produce``
(which serves the data but does not wait for the aggregator).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

import redis

from producers.feeder import Feeder
from producers.submit import DONE, Submitted, finished, status, submit
from shared import keys
from shared.auditors import AuditConfig
from shared.errors import PipelineError

POLL_S = 0.02


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

    def show(self, state: dict[str, object], force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.shown < self.every_s:
            return
        self.shown = now
        done, total = state["segments_done"], state["segments_total"]
        messages = int(state.get("messages", 0))  # type: ignore[call-overload]
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


def lost_broker(url: str, jid: str, exc: Exception) -> PipelineError:
    where = url.rsplit("@", 1)[-1]  # never print a password
    return PipelineError(
        f"lost the broker at {where} while job {jid or '?'} was running ({type(exc).__name__}: {exc}). "
        "retape keeps a job's state in the broker only while it runs: run the same command again "
        "(a re-run of the same inputs starts the job afresh and writes the same results)"
    )


def job_vanished(jid: str) -> PipelineError:
    return PipelineError(
        f"job {jid} vanished from the broker while it ran (restarted or flushed?): run the same command again"
    )


def serve(client: redis.Redis, sub: Submitted, tick: Callable[[], None] | None = None) -> Feeder:
    """Serve the job's input data until every segment has its result."""
    feeder = Feeder(client, sub.job, sub.plan)
    feeder.serve(lambda: finished(client, sub.job), tick)
    return feeder


def run_job(
    url: str,
    paths: list[str],
    cfg: AuditConfig,
    out_dir: str,
    progress: bool,
    alive: Callable[[], None] | None = None,
) -> Submitted:
    """Submit (or join) the job, serve its data, and return once its outputs are written."""
    jid = ""
    try:
        sub = submit(url, paths, cfg, out_dir, rerun_done=True)
        jid = sub.job
        client = redis.Redis.from_url(url)
        bar = Progress(jid) if progress else None

        def tick() -> None:
            if alive is not None:
                alive()
            if bar is not None:
                bar.show(status(client, jid))

        if sub.serving:
            serve(client, sub, tick)
        while True:
            meta = client.hget(keys.job(jid), "state")
            if meta is None:
                raise job_vanished(jid)
            if meta == DONE.encode():
                break
            if meta == b"failed":
                raise PipelineError(
                    f"job {jid} failed: its aggregation was dead-lettered; see `retape status`"
                )
            tick()
            time.sleep(POLL_S)
        if bar is not None:
            bar.show(status(client, jid), force=True)
            bar.close()
        return sub
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise lost_broker(url, jid, exc) from None
