"""A directory of captures answering replay questions: "the messages of these channels and
symbols of this exchange, received in this time range".

Any capture retape can audit can be in the archive (hftbacktest, cryptofeed, Tardis raw,
plain JSON lines; gzip or not).  The archive reads them with the audit's own readers and
venue modules, so a message is served for the stream the audit would file it under.  It is
what ``retape serve-archive DIR`` puts behind the Tardis-compatible API, and what a
``--replay-source DIR`` reads directly.
"""

from __future__ import annotations

import heapq
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import orjson

from shared.engine import probe_group
from shared.exchanges import venue_for_file, venue_for_message, venue_for_url
from shared.exchanges.base import Session, UnknownEvent
from shared.formats.readers import READERS
from shared.model import BookMsg, Disconnect, RawRecord, StreamKey
from shared.planning import plan
from shared.replay.channels import our_channel

# Receive times in a capture can go back a little (merged connections): reading a file stops
# this far past the end of the range asked for.
SLACK_US = 5_000_000

Record = tuple[int | None, bytes | None]  # (receive time, raw JSON); None: a disconnect


@dataclass(frozen=True, slots=True)
class Wanted:
    """One filter: a retape channel of the exchange, and the symbols (all when empty)."""

    channel: str
    symbols: frozenset[str]

    def matches(self, key: StreamKey) -> bool:
        return key.channel == self.channel and (not self.symbols or key.symbol in self.symbols)


def parse_filters(exchange: str, raw: str | None) -> list[Wanted]:
    """Tardis ``filters`` (``[{"channel": "depth", "symbols": ["btcusdt"]}]``) as what retape
    audits; a channel retape does not audit matches nothing.  ValueError on a bad filter."""
    if not raw:
        return [Wanted(c, frozenset()) for c in ("book", "trades", "funding")]
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"filters is not JSON: {exc}") from None
    if not isinstance(data, list):
        raise ValueError("filters must be a JSON array of {channel, symbols}")
    wanted = []
    for f in data:
        if not isinstance(f, dict) or not isinstance(f.get("channel"), str):
            raise ValueError("every filter needs a channel")
        symbols = f.get("symbols") or []
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            raise ValueError("symbols must be a list of strings")
        ours = our_channel(exchange, f["channel"])
        if ours is not None:
            wanted.append(Wanted(ours, frozenset(s.upper() for s in symbols)))
    return wanted


@dataclass(frozen=True, slots=True)
class ArchivedFile:
    path: str
    fmt: str
    exchanges: frozenset[str]
    first_us: int | None


class Archive:
    """The captures under ``root`` (read once to learn their exchanges and start times)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._files: list[ArchivedFile] | None = None
        self._lock = threading.Lock()

    def files(self) -> list[ArchivedFile]:
        with self._lock:
            if self._files is None:
                self._files = self._index()
            return self._files

    def _index(self) -> list[ArchivedFile]:
        job = plan([self.root])
        found = []
        for summary in job.inputs:
            fmt = job.formats.get(summary.path)
            if summary.error is not None or fmt is None or fmt not in READERS:
                continue
            head = probe_group([summary.path], job.formats)
            exchanges = frozenset(k.exchange for k in head.keys)
            if exchanges:
                found.append(ArchivedFile(summary.path, fmt, exchanges, head.first_us))
        return found

    def records(self, exchange: str, start_us: int, end_us: int, wanted: list[Wanted]) -> Iterator[Record]:
        """The raw messages of ``exchange`` received in ``[start_us, end_us)`` that feed a wanted
        stream, in receive-time order (a disconnect of a file holding them as ``None``)."""
        streams = [
            _file_records(f, exchange, start_us, end_us, wanted)
            for f in self.files()
            if exchange in f.exchanges and (f.first_us is None or f.first_us < end_us)
        ]
        merged: Iterable[tuple[int, int, Record]] = heapq.merge(*streams, key=lambda t: (t[0], t[1]))
        for _, _, record in merged:
            yield record


def _file_records(
    f: ArchivedFile, exchange: str, start_us: int, end_us: int, wanted: list[Wanted]
) -> Iterator[tuple[int, int, Record]]:
    session: Session | None = None
    reader = READERS[f.fmt](f.path)
    close = getattr(reader, "close", None)
    order = 0
    try:
        for rec in reader:
            local = rec.local_us
            if local is not None and local >= end_us + SLACK_US:
                return
            if rec.kind == "disconnect":
                if local is not None and start_us <= local < end_us:
                    order += 1
                    yield local, order, (local, None)
                if rec.url and session is not None:
                    session = None
                continue
            if rec.kind != "json" or local is None:
                continue
            try:
                obj = orjson.loads(rec.raw)
            except orjson.JSONDecodeError:
                continue
            if session is None:
                session = _session(rec, obj)
                if session is None:
                    continue
            try:
                events = session.parse(rec, obj)
            except (
                UnknownEvent,
                KeyError,
                TypeError,
                ValueError,
                IndexError,
                AttributeError,
                ArithmeticError,
            ):
                continue
            if not (start_us <= local < end_us):
                continue
            if any(_served(ev, exchange, wanted) for ev in events):
                order += 1
                yield local, order, (local, rec.raw)
    finally:
        if close is not None:
            close()


def _served(ev: object, exchange: str, wanted: list[Wanted]) -> bool:
    """An event the answer carries: of a wanted stream, and not a REST snapshot (which is no
    stream message: Tardis serves those on a channel of their own)."""
    if isinstance(ev, Disconnect) or (isinstance(ev, BookMsg) and ev.bridge):
        return False
    key: StreamKey = ev.key  # type: ignore[attr-defined]
    return key.exchange == exchange and any(w.matches(key) for w in wanted)


def _session(rec: RawRecord, obj: object) -> Session | None:
    venue = (venue_for_url(rec.url) if rec.url else None) or venue_for_file(os.path.basename(rec.path))
    venue = venue or venue_for_message(obj)
    return venue.session(rec.url) if venue is not None else None
