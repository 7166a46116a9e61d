"""From a segment's gaps to fill requests, and from the sources' answers to repairs.

Pure: the audit kind asks :func:`requests_for` which gaps to send to the ``replay`` queue,
and audits the segment again with an :class:`AnswerBook` of what came back; the auditors
look each gap up in it (:class:`~shared.auditors.Repairs`).
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.auditors import Repair, StreamResult
from shared.model import Gap, StreamKey
from shared.replay.fill import CONNECTION_IDS, Answer, repairable
from shared.replay.request import FillRequest

# Gaps of one segment asked for at most (each is one sub-task); the rest are reported as not
# asked for, with this reason.
MAX_REQUESTS = 500


def requests_for(parts: Iterable[StreamResult], limit: int = MAX_REQUESTS) -> list[FillRequest]:
    """The fill requests for the gaps of a segment's streams, in order, each once."""
    found: dict[tuple[StreamKey, str, int], FillRequest] = {}
    for part in parts:
        if not repairable(part.key):
            continue
        for gap in part.gaps:
            req = FillRequest.of(part.key, gap)
            if req is not None and req.ident not in found:
                found[req.ident] = req
                if len(found) >= limit:
                    return list(found.values())
    return list(found.values())


class AnswerBook:
    """The repairs of one segment's gaps: from the answers of the sub-tasks that asked for
    them; the other gaps get the reason they were not asked for."""

    def __init__(self, answers: Iterable[Answer], limit: int = MAX_REQUESTS) -> None:
        self.limit = limit
        self.answers = {a.request.ident: a for a in answers}

    def lookup(self, key: StreamKey, gap: Gap) -> Repair:
        req = FillRequest.of(key, gap)
        if req is None or not repairable(key):
            return Repair(reasons={"*": unasked_reason(key, req)})
        answer = self.answers.get(req.ident)
        if answer is None:
            return Repair(
                reasons={"*": f"not asked for: more than {self.limit} gaps in this part of the job"}
            )
        if answer.request.before != req.before or answer.request.link != req.link:
            return Repair(reasons={"*": "the answer was for another gap after the same id"})
        fill = answer.fill
        if fill is None:
            return Repair(reasons=answer.reasons or {"*": "no replay source answered"})
        return Repair(list(fill.messages), fill.source, fill.provenance(), dict(answer.reasons))


def unasked_reason(key: StreamKey, req: FillRequest | None) -> str:
    if key.exchange in CONNECTION_IDS:
        return f"{key.exchange} ids number one connection's messages: no other recording can prove a fill"
    if not repairable(key):
        return f"{key.exchange} {key.channel} ids cannot prove that a fill bridges the gap"
    assert req is None
    return "the gap has no ids or receive times to ask a source with"
