"""The kinds of work, one queue each, so a rate-limited pool never starves the others."""

from __future__ import annotations

from enum import StrEnum


class Queue(StrEnum):
    BOOK = "book"  # audit and rebuild one segment of a stream
    REPLAY = "replay"  # fetch a missing range from a replay source
    LLM = "llm"  # ask the language model about an ambiguous ledger group
    LEDGER = "ledger"  # normalise and correlate account-history fragments
    AGGREGATE = "aggregate"  # merge a job's results into the audit records


ALL_QUEUES: tuple[str, ...] = tuple(q.value for q in Queue)


def parse_queues(text: str | None) -> list[str]:
    """``book,replay`` to a list of queue names; every known queue when empty."""
    if not text:
        return list(ALL_QUEUES)
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in ALL_QUEUES]
    if unknown:
        raise ValueError(f"unknown queue(s) {', '.join(unknown)}; known: {', '.join(ALL_QUEUES)}")
    return names
