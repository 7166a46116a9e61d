"""Names of every Redis key retape uses, in one place (pure strings: no Redis import).

Everything of a job lives under ``retape:job:<job>``.  The job's hash (``retape:job:<job>``,
fields in :class:`shared.jobs.Field`) outlives the job for ``retape status``; every other
key of the job is *transient* (deleted when the outputs are written) and matches
:func:`job_transient_pattern`.  What outlives jobs (delivery counters, the dead-letter list,
shared rate limiters) has its own prefix.
"""

from __future__ import annotations

PREFIX = "retape"
DEAD_LETTERS = f"{PREFIX}:dead-letters"


def job(job_id: str) -> str:
    """The job's hash: state, kind, counts (see :class:`shared.jobs.Field`)."""
    return f"{PREFIX}:job:{job_id}"


def job_transient_pattern(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:*"


def deliveries(task_id: str) -> str:
    """How many times a task was started (redelivery counter)."""
    return f"{PREFIX}:deliveries:{task_id}"


def job_plan(job_id: str) -> str:
    """The job's plan (:class:`shared.jobs.JobPlan`) as JSON."""
    return f"{PREFIX}:job:{job_id}:plan"


def job_lease(job_id: str) -> str:
    """Held (with a short expiry, renewed) by the producer that submitted the job and serves
    its data; a producer finding it free takes the job over."""
    return f"{PREFIX}:job:{job_id}:lease"


def job_events(job_id: str) -> str:
    """What the waiting submitter is told (a list of :class:`shared.jobs.Event`)."""
    return f"{PREFIX}:job:{job_id}:events"


def stage_result(job_id: str, segment: int, stage: int) -> str:
    """One stage's result of a segment, written once."""
    return f"{PREFIX}:job:{job_id}:seg:{segment}:stage:{stage}"


def segment_final(job_id: str, segment: int) -> str:
    """The stage whose result is the segment's final one (written once)."""
    return f"{PREFIX}:job:{job_id}:seg:{segment}:final"


def sub_result(job_id: str, segment: int, stage: int, sub: int) -> str:
    """One sub-task's answer for a stage, written once."""
    return f"{PREFIX}:job:{job_id}:seg:{segment}:stage:{stage}:sub:{sub}"


def barrier(job_id: str, name: str) -> str:
    """The members that arrived at a barrier (a set); ``:tripped`` names who tripped it."""
    return f"{PREFIX}:job:{job_id}:barrier:{name}"


def job_gen(job_id: str, segment: int) -> str:
    """How many times a worker started reading segment ``segment`` (each start reads a fresh
    copy of its data)."""
    return f"{PREFIX}:job:{job_id}:gen:{segment}"


def job_wake(job_id: str) -> str:
    """Pokes for the producer's feeder: a worker wants a file, or read a block (a list)."""
    return f"{PREFIX}:job:{job_id}:wake"


def job_wants(job_id: str) -> str:
    """Requests from workers to the producer: ``<epoch>:<segment>:<generation>:<file>`` (a list)."""
    return f"{PREFIX}:job:{job_id}:wants"


def job_data(job_id: str, epoch: int, segment: int, gen: int, file_no: int) -> str:
    """The stream of one input file's bytes, for one start of one segment (of one start of
    the job: a stale worker of an earlier start never reads a stream of this one)."""
    return f"{PREFIX}:job:{job_id}:data:{epoch}:{segment}:{gen}:{file_no}"
