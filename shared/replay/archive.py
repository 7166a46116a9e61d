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
from shared.exchanges.base import Session, UnknownEvent, Venue
from shared.formats.detect import detect
from shared.formats.lines import TruncatedInput
from shared.formats.readers import READERS
from shared.model import BookMsg, Disconnect, RawRecord, StreamKey
from shared.planning import expand_paths
from shared.replay.channels import our_channel

# Receive times in a capture can go back a little (merged connections): reading a file stops
# this far past the end of the range asked for.
SLACK_US = 5_000_000
# Venues whose sessions learn from earlier messages how to read later ones (Kraken's and
# Bitfinex's channel ids): every line before the range is read for them; for the others, lines
# before the range are skipped unparsed.
STATEFUL_VENUES = frozenset({"kraken", "bitfinex"})

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
    """The captures under ``root``: the head of each is read once to learn its exchanges and
    start time, again when the file changes (a capture still being written, one added)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._known: dict[str, tuple[tuple[int, int], ArchivedFile | None]] = {}
        self._lock = threading.Lock()

    def files(self) -> list[ArchivedFile]:
        with self._lock:
            known: dict[str, tuple[tuple[int, int], ArchivedFile | None]] = {}
            for entry in expand_paths([self.root]):
                if entry.problem is not None:
                    continue
                try:
                    st = os.stat(entry.path)
                except OSError:
                    continue
                stamp = (st.st_size, st.st_mtime_ns)
                before = self._known.get(entry.path)
                known[entry.path] = (
                    before if before and before[0] == stamp else (stamp, _index_one(entry.path))
                )
            self._known = known
            return [f for _, f in known.values() if f is not None]

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


def _index_one(path: str) -> ArchivedFile | None:
    try:
        fmt = detect(path)
    except (OSError, TruncatedInput):
        return None  # not readable now: asked again when it changes
    if fmt is None or fmt not in READERS:
        return None
    head = probe_group([path], {path: fmt})
    exchanges = frozenset(k.exchange for k in head.keys)
    return ArchivedFile(path, fmt, exchanges, head.first_us) if exchanges else None


_ARCHIVES: dict[str, Archive] = {}
_ARCHIVES_LOCK = threading.Lock()


def archive_at(root: str) -> Archive:
    """The archive of ``root``, one per process (its index is kept between fills)."""
    with _ARCHIVES_LOCK:
        found = _ARCHIVES.get(root)
        if found is None:
            found = _ARCHIVES[root] = Archive(root)
        return found


def _file_records(
    f: ArchivedFile, exchange: str, start_us: int, end_us: int, wanted: list[Wanted]
) -> Iterator[tuple[int, int, Record]]:
    session: Session | None = None
    stateful = True  # until the venue is known: parse everything
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
            if local < start_us and not stateful:
                continue  # before the range, and nothing in it shapes how later lines read
            try:
                obj = orjson.loads(rec.raw)
            except orjson.JSONDecodeError:
                continue
            if session is None:
                venue = _venue(rec, obj)
                if venue is None:
                    continue
                session = venue.session(rec.url)
                stateful = venue.name in STATEFUL_VENUES
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


def _venue(rec: RawRecord, obj: object) -> Venue | None:
    venue = (venue_for_url(rec.url) if rec.url else None) or venue_for_file(os.path.basename(rec.path))
    return venue or venue_for_message(obj)
