"""Planning a job: which files are inputs, in which format, and how they are cut into
segments (the units of work that workers audit independently).

Files are recognised by content.  cryptofeed keeps a connection's REST answers and its
WebSocket messages in sibling files (``BINANCE_FUTURES.http.0.0`` and
``BINANCE_FUTURES.ws.1.0``): such siblings form one capture group, read merged by receive
time so a REST snapshot meets the stream it opens.

Segments are decided by content too, never by file names: the head of every capture group
is read by the audit's own machinery to learn which streams it feeds and when its recording
starts.  Groups that feed a common stream must be audited together (a file may continue
another's recording, and only the ids across the cut tell), so they are one segment, read in
order of receive time; groups that share no stream are independent and audited in parallel.

Every entry found under the inputs becomes an :class:`InputSummary`, including the ones that
cannot be read (a name that is not valid UTF-8, no permission, a broken link, a directory that
cannot be listed): those are marked ``audited=False`` with the reason, never skipped in silence.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from shared.errors import InputError
from shared.formats.detect import detect
from shared.formats.lines import TruncatedInput
from shared.model import StreamKey


@dataclass(slots=True)
class InputSummary:
    """One input as the report lists it.  ``audited`` is False for an input that was found but
    could not be read at all (``error`` says why); a file that was read and is not a capture
    stays ``audited`` with its ``error``."""

    path: str
    sha256: str = ""
    format: str | None = None
    lines: int = 0
    malformed: int = 0
    ignored: int = 0
    error: str | None = None
    audited: bool = True
    # Why lines were ignored (not market data the audit reads, recorder lines, blank...).
    ignored_why: dict[str, int] = field(default_factory=dict)
    streams: int = 0  # streams the input fed
    cut_off: bool = False  # the file ends early (a cut-off or corrupt compressed stream)

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
            data.get("audited", True),
            dict(data.get("ignored_why", {})),
            int(data.get("streams", 0)),
            bool(data.get("cut_off", False)),
        )

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "sha256": self.sha256,
            "lines": self.lines,
            "malformed": self.malformed,
            "format": self.format,
            "ignored": self.ignored,
            "ignored_why": dict(sorted(self.ignored_why.items())),
            "streams": self.streams,
            "cut_off": self.cut_off,
            "audited": self.audited,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


# -- finding the inputs --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Found:
    """An entry found under the inputs: a file to read, or (``problem`` set) one that cannot be."""

    path: str
    problem: str | None = None


def expand_paths(paths: Iterable[str]) -> list[Found]:
    """Everything under ``paths`` (directories recursed, links to directories followed once,
    entries sorted by name, hidden ones left out), each path once.  A directory that cannot be
    listed is an entry with its problem; a missing top-level path raises :class:`InputError`."""
    out: list[Found] = []
    visited: set[tuple[int, int]] = set()
    for p in paths:
        if os.path.isdir(p):
            _walk(p, out, visited)
        elif os.path.exists(p):
            out.append(Found(p))
        elif os.path.lexists(p):
            raise InputError(p, "broken symbolic link (its target does not exist)")
        else:
            raise InputError(p, "no such file or directory")
    seen: set[str] = set()
    unique: list[Found] = []
    for entry in out:
        if entry.path not in seen:
            seen.add(entry.path)
            unique.append(entry)
    return unique


def _walk(top: str, out: list[Found], visited: set[tuple[int, int]]) -> None:
    """Append the entries under directory ``top`` to ``out``, in a fixed order.  A directory
    reached twice (a link back up the tree, two links to one place) is read once."""

    def unreadable(exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        problem = f"cannot read this directory ({reason}); the files in it were not audited"
        out.append(Found(exc.filename or top, problem))

    def first_visit(path: str) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return True  # os.walk reports it
        ident = (st.st_dev, st.st_ino)
        if ident in visited:
            return False
        visited.add(ident)
        return True

    if not first_visit(top):
        return
    for root, dirs, files in os.walk(top, onerror=unreadable, followlinks=True):
        out.extend(
            sorted((Found(os.path.join(root, f)) for f in files if not f.startswith(".")), key=_by_path)
        )
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and first_visit(os.path.join(root, d)))


def _by_path(entry: Found) -> str:
    return entry.path


def shown_path(path: str) -> str:
    """``path`` as valid UTF-8 text: a name that is not valid UTF-8 shows its odd bytes as
    ``\\xNN`` escapes, so a report (JSON) can still name it."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _name_problem(path: str) -> str | None:
    """Why ``path`` is not read because of its name (not valid UTF-8), or None."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        return None
    try:
        os.path.basename(path).encode("utf-8")
    except UnicodeEncodeError:
        what = "file"
    else:
        what = "directory it is in"
    return (
        f"the name of the {what} is not valid UTF-8, so the file was not read (the report and "
        f"its findings could not name it exactly); rename the {what} to audit it"
    )


def _kind_problem(path: str) -> str | None:
    """Why ``path`` is not a file that can be read (a broken link, a pipe...), or None."""
    if os.path.isfile(path):
        return None
    if not os.path.lexists(path):
        return "no longer exists (removed while the audit was starting)"
    if os.path.islink(path) and not os.path.exists(path):
        return "broken symbolic link (its target does not exist)"
    return "not a regular file (a pipe, socket or device)"


def sha256_of(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def summarise(
    entry: Found, hash_later: Callable[[str], bool] | None = None
) -> tuple[InputSummary, str | None]:
    """The summary of one entry and its capture format (None when it is not to be read).
    Its SHA-256 is left empty when ``hash_later(path)`` says the workers hash it (see
    :func:`plan`)."""
    summary = InputSummary(shown_path(entry.path))
    problem = entry.problem or _name_problem(entry.path) or _kind_problem(entry.path)
    if problem is not None:
        summary.audited = False
        summary.error = problem
        return summary, None
    try:
        if hash_later is None or not hash_later(entry.path):
            summary.sha256 = sha256_of(entry.path)
        summary.format = detect(entry.path)
    except OSError as exc:
        summary.audited = False
        summary.error = f"cannot read: {exc.strerror or exc}"
        return summary, None
    except TruncatedInput as exc:
        summary.error = str(exc)
        return summary, None
    if summary.format is None:
        summary.error = "not a recognised capture format"
    return summary, summary.format


# -- cutting the captures into segments ----------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class GroupHead:
    """What the head of a capture group shows: the streams it feeds and the earliest receive
    time read (None when its format carries none)."""

    keys: frozenset[StreamKey]
    first_us: int | None


def segments_of(groups: Sequence[list[str]], heads: Sequence[GroupHead]) -> list[list[list[str]]]:
    """Capture groups that feed a common stream, directly or through other groups, form one
    segment; a group that feeds none is a segment of its own.  Inside a segment the groups are
    read in order of their first receive time, then path (groups without one last, by path), so
    a recording split into files is read in the order it was recorded, whatever the files are
    called.  Segments come in the order of their first group in ``groups``."""
    parent = list(range(len(groups)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[StreamKey, int] = {}
    for i, head in enumerate(heads):
        for key in head.keys:
            a, b = root(i), root(owner.setdefault(key, i))
            if a != b:
                parent[max(a, b)] = min(a, b)  # the root stays the segment's first group
    members: dict[int, list[int]] = {}
    for i in range(len(groups)):
        members.setdefault(root(i), []).append(i)
    return [
        [groups[i] for i in sorted(members[r], key=lambda i: _read_order(groups[i], heads[i]))]
        for r in sorted(members)
    ]


def _read_order(group: list[str], head: GroupHead) -> tuple[bool, int, str]:
    return (head.first_us is None, head.first_us or 0, group[0])


@dataclass(slots=True)
class Plan:
    """What a job reads: every input found (recognised, not a capture, or not readable) and the
    segments of captures, each an ordered list of capture groups.  Segments are independent
    units of work."""

    inputs: list[InputSummary]
    formats: dict[str, str | None]
    segments: list[list[list[str]]]

    def segment_inputs(self, index: int) -> list[InputSummary]:
        """Fresh copies of the summaries of segment ``index``'s files, in plan order."""
        files = {f for group in self.segments[index] for f in group}
        return [replace(i) for i in self.inputs if i.path in files]


def plan(paths: Sequence[str], hash_later: Callable[[str], bool] | None = None) -> Plan:
    """Recognise every file under ``paths``, probe the head of each capture group (where there
    are several) and cut the captures into segments (see :func:`segments_of`).

    ``hash_later(path)`` True: the file's SHA-256 is not computed here but by the workers that
    read it (its summary's ``sha256`` stays empty until their results fill it in), so a big
    recording is not read once more, on one core, before its work is shared out.  A file not
    read by any segment is hashed here all the same."""
    # The probe reads with the engine, which imports this module: import it when planning.
    from shared.engine import probe_group

    inputs: list[InputSummary] = []
    formats: dict[str, str | None] = {}
    for entry in expand_paths(paths):
        summary, fmt = summarise(entry, hash_later)
        inputs.append(summary)
        formats[summary.path] = fmt
    captures = [i.path for i in inputs if formats[i.path] not in (None, "empty")]
    for i in inputs:
        if not i.sha256 and i.audited and i.path not in captures:
            try:
                i.sha256 = sha256_of(i.path)
            except OSError as exc:
                i.audited = False
                i.error = f"cannot read: {exc.strerror or exc}"
    groups = capture_groups(captures, formats)
    # One capture group is one segment whatever its head shows: no need to read it here.
    if len(groups) > 1:
        heads = [probe_group(group, formats) for group in groups]
    else:
        heads = [GroupHead(frozenset(), None) for _ in groups]
    return Plan(inputs, formats, segments_of(groups, heads))
