"""Planning a job: which files are inputs, in which format, and how they are cut into
segments (the units of work that workers audit independently).

Files are recognised by content.  cryptofeed keeps a connection's REST answers and its
WebSocket messages in sibling files (``BINANCE_FUTURES.http.0.0`` and
``BINANCE_FUTURES.ws.1.0``): such siblings form one capture group, read merged by receive
time so a REST snapshot meets the stream it opens.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from shared.errors import InputError
from shared.formats.detect import detect
from shared.formats.lines import TruncatedInput


@dataclass(slots=True)
class InputSummary:
    path: str
    sha256: str = ""
    format: str | None = None
    lines: int = 0
    malformed: int = 0
    ignored: int = 0
    error: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputSummary:
        return cls(
            data["path"],
            data["sha256"],
            data["format"],
            data["lines"],
            data["malformed"],
            data["ignored"],
            data.get("error"),
        )

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "sha256": self.sha256,
            "lines": self.lines,
            "malformed": self.malformed,
            "format": self.format,
            "ignored": self.ignored,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


def expand_paths(paths: Iterable[str]) -> list[str]:
    """Files under ``paths`` (directories recursed, sorted); raises InputError for a missing path."""
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                out.extend(os.path.join(root, f) for f in sorted(files) if not f.startswith("."))
        elif os.path.exists(p):
            out.append(p)
        else:
            raise InputError(p, "no such file or directory")
    return out


def sha256_of(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


_DIGITS = re.compile(r"[0-9]+")


def rotation_segments(groups: Sequence[list[str]]) -> list[list[list[str]]]:
    """Capture groups that continue each other: one directory, names equal but for their
    digits (``btcusdt_20240808.gz``, ``btcusdt_20240809.gz``).  Segments are independent
    recordings; a stream fed by several segments is the sum of independent audits."""
    segments: dict[tuple[str, str], list[list[str]]] = {}
    for group in groups:
        first = group[0]
        pattern = _DIGITS.sub("#", os.path.basename(first).split(".", 1)[0])
        segments.setdefault((os.path.dirname(first), pattern), []).append(group)
    return list(segments.values())


def capture_groups(files: Sequence[str], formats: dict[str, str | None]) -> list[list[str]]:
    """Files that must be read together: cryptofeed siblings sharing a prefix in one directory."""
    groups: dict[tuple[str, str], list[str]] = {}
    order: list[tuple[str, str]] = []
    for f in files:
        if formats.get(f) == "cryptofeed":
            key = (os.path.dirname(f), os.path.basename(f).split(".", 1)[0])
        else:
            key = (f, "")
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(f)
    return [groups[k] for k in order]


@dataclass(slots=True)
class Plan:
    """What a job reads: every input file (recognised or not) and the segments of captures,
    each an ordered list of capture groups.  Segments are independent units of work."""

    inputs: list[InputSummary]
    formats: dict[str, str | None]
    segments: list[list[list[str]]]

    def segment_inputs(self, index: int) -> list[InputSummary]:
        """Fresh copies of the summaries of segment ``index``'s files, in plan order."""
        files = {f for group in self.segments[index] for f in group}
        return [replace(i) for i in self.inputs if i.path in files]


def plan(paths: Sequence[str]) -> Plan:
    """Recognise every file under ``paths`` and cut the captures into segments."""
    files = expand_paths(paths)
    formats: dict[str, str | None] = {}
    inputs: list[InputSummary] = []
    for f in files:
        summary = InputSummary(f)
        inputs.append(summary)
        formats[f] = None
        if not os.path.isfile(f):
            summary.error = "not a regular file (broken link, pipe or device)"
            continue
        try:
            summary.sha256 = sha256_of(f)
            summary.format = formats[f] = detect(f)
        except OSError as exc:
            summary.error = f"cannot read: {exc.strerror or exc}"
            formats[f] = None
            continue
        except TruncatedInput as exc:
            summary.error = str(exc)
            formats[f] = None
            continue
        if summary.format is None:
            summary.error = "not a recognised capture format"
    groups = capture_groups([f for f in files if formats.get(f) not in (None, "empty")], formats)
    return Plan(inputs, formats, rotation_segments(groups))
