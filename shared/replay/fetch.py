"""Filling one gap: each source in order until one gives a fill that bridges it."""

from __future__ import annotations

from collections.abc import Sequence

from shared.errors import RetapeError
from shared.replay.fill import Answer, AnswerRejected, read_events, select_fill
from shared.replay.request import FillRequest
from shared.replay.retry import Attempts, BadAnswer, SourceFailed
from shared.replay.sources import Source


def fill_gap(req: FillRequest, sources: Sequence[Source]) -> Answer:
    """The answer for ``req``: the first fill a source gives, and why each source before it
    gave none.  Never raises for a source's failure: that is a reason in the answer."""
    answer = Answer(req)
    for source in sources:
        attempts = Attempts(source.name)
        try:
            events = read_events(req.key.exchange, source.name, source.records(req, attempts))
            answer.fill = select_fill(req, source.name, events)
        except AnswerRejected as exc:
            answer.reasons[source.name] = f"answer rejected: {exc}"
        except BadAnswer as exc:
            answer.reasons[source.name] = f"answer rejected: {exc}"
        except SourceFailed as exc:
            answer.reasons[source.name] = str(exc)
        except (RetapeError, OSError) as exc:
            answer.reasons[source.name] = f"{type(exc).__name__}: {exc}"
        finally:
            answer.stats.extend(attempts.made)
        if answer.fill is not None:
            break
    return answer
