"""Names of every Redis key retape uses, in one place (pure strings: no Redis import).

Everything of a job lives under ``retape:job:<job>``; what must outlive jobs (claims of
inputs, the dead-letter list, shared rate limiters) has its own prefix.
"""

from __future__ import annotations

PREFIX = "retape"
DEAD_LETTERS = f"{PREFIX}:dead-letters"


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def deliveries(task_id: str) -> str:
    """How many times a task was started (redelivery counter)."""
    return f"{PREFIX}:deliveries:{task_id}"


def claim(fingerprint: str) -> str:
    """Held while inputs with this fingerprint are being (or were) submitted."""
    return f"{PREFIX}:claim:{fingerprint}"


def job_plan(job_id: str) -> str:
    """The job's plan (inputs, formats, segments) as JSON."""
    return f"{PREFIX}:job:{job_id}:plan"


def job_result(job_id: str, index: int) -> str:
    """One segment's result as JSON, written once."""
    return f"{PREFIX}:job:{job_id}:result:{index}"


def job_done(job_id: str) -> str:
    """The set of segment indexes whose result is written (the aggregator's own count)."""
    return f"{PREFIX}:job:{job_id}:done"


def job_gen(job_id: str, index: int) -> str:
    """How many times a worker started on segment ``index`` (each start reads a fresh copy)."""
    return f"{PREFIX}:job:{job_id}:gen:{index}"


def job_wants(job_id: str) -> str:
    """Requests from workers to the producer: ``<segment>:<generation>:<file>`` (a list)."""
    return f"{PREFIX}:job:{job_id}:wants"


def job_data(job_id: str, index: int, gen: int, file_no: int) -> str:
    """The stream of one input file's stored bytes, for one start of one segment."""
    return f"{PREFIX}:job:{job_id}:data:{index}:{gen}:{file_no}"


def job_data_pattern(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:data:*"


def job_feeder(job_id: str) -> str:
    """Held (with a short expiry, renewed) while a producer serves the job's data."""
    return f"{PREFIX}:job:{job_id}:feeder"


def job_takeovers(job_id: str) -> str:
    """Counts producers that took over the job after its first producer stopped."""
    return f"{PREFIX}:job:{job_id}:takeovers"
