"""One root error type; purpose-named subclasses sit next to their domain."""

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


class PipelineError(RetapeError):
    """The distributed pipeline cannot go on: the broker is gone, or a job's data is."""


class FeederGone(PipelineError):
    """No producer is serving a job's input data (it stopped before the job finished)."""


class Superseded(PipelineError):
    """A newer start of the same unit of work exists; this one gives way."""


class DataCorrupt(PipelineError):
    """Bytes received through the broker differ from the input's fingerprint."""
