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
    """The job's plan (inputs, formats, families) as JSON."""
    return f"{PREFIX}:job:{job_id}:plan"


def job_result(job_id: str, index: int) -> str:
    """One family's result as JSON, written once."""
    return f"{PREFIX}:job:{job_id}:result:{index}"


def job_done(job_id: str) -> str:
    """The set of family indexes whose result is written (the aggregator's own count)."""
    return f"{PREFIX}:job:{job_id}:done"


def job_aggregated(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:aggregated"
