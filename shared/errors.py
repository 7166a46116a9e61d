"""One root error type; purpose-named subclasses sit next to their domain.

Whether a failed task is tried again is read from the type, never from the message:

- :class:`TransientError` (an upstream's 429 with its ``Retry-After``, a timeout, a 5xx, a
  lost broker, a producer not serving yet): try again later, after ``retry_after`` seconds
  when the error knows it, else after an exponential backoff with full jitter;
- :class:`PermanentError` (bad credentials, bad input, bytes that do not match their
  fingerprint): trying again cannot help, so the task is dead-lettered at once.

Anything else a task raises is a bug or an unknown failure: it is tried again a few times,
then dead-lettered with its reason.
"""

from __future__ import annotations


class RetapeError(Exception):
    """Root of every error retape raises on purpose."""


class UsageError(RetapeError):
    """The command line or a configuration value is wrong (exit status 2)."""


class InputError(RetapeError):
    """An input path cannot be read at all (missing, unreadable, not a capture)."""

    def __init__(self, path: str, reason: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class OutputBusy(UsageError):
    """Another run owns the output directory."""


# -- what a task's failure means for its retry -----------------------------------------


class TransientError(RetapeError):
    """Trying again later may succeed; ``retry_after`` (seconds) when the cause said when."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(TransientError):
    """An upstream answered 429 (or a venue's rate-limit error); honour its ``Retry-After``."""


class UpstreamTimeout(TransientError):
    """An upstream did not answer in time."""


class UpstreamUnavailable(TransientError):
    """An upstream answered 5xx or refused the connection."""


class PermanentError(RetapeError):
    """Trying again cannot help: the task is dead-lettered at once with this reason."""


class AuthFailed(PermanentError):
    """Credentials were refused (401/403, a wrong broker password)."""


class BadInput(PermanentError):
    """The input of a task cannot be processed as it is."""


# -- the pipeline ----------------------------------------------------------------------


class PipelineError(RetapeError):
    """The distributed pipeline cannot go on: the broker is gone, or a job's data is."""


class BrokerUnreachable(PipelineError):
    """No connection to the broker could be made (nothing listens, wrong password...)."""


class BrokerLost(PipelineError, TransientError):
    """The connection to the broker was lost after it had worked."""


class FeederGone(PipelineError, TransientError):
    """No producer is serving a job's input data (it stopped before the job finished)."""


class DataCorrupt(PipelineError, PermanentError):
    """Bytes read for an input differ from the fingerprint it was submitted with."""


class Superseded(PipelineError):
    """A newer start of the same unit of work exists; this one gives way (not a failure)."""


class LeaseLost(PipelineError):
    """Another producer took over the job this command was serving (it goes on there)."""


class JobIncomplete(PipelineError):
    """A job ended without every input audited (timed out, cancelled, broker lost)."""
