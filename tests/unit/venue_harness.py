"""The harness the venue tests share: read a capture, decode it, drive a venue session over it,
and feed the events to the auditors the way the engine does.

Not a test module: ``test_venue_*.py`` import it by its bare name (pytest puts this folder on
``sys.path`` before importing them).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from shared.auditors import AuditConfig, BookAuditor, FundingAuditor, StreamResult, TradeAuditor
from shared.book import Book
from shared.exchanges import rules_for
from shared.exchanges.base import Venue, VenueRules
from shared.formats.readers import read_cryptofeed
from shared.model import BookMsg, Disconnect, Event, FundingMsg, RawRecord, StreamKey, TradeMsg

DATA = Path(__file__).resolve().parent.parent / "data"

Reader = Callable[[str], Iterator[RawRecord]]

_AUDITORS: dict[type, Any] = {BookMsg: BookAuditor, TradeMsg: TradeAuditor, FundingMsg: FundingAuditor}


def json_records(path: Path, reader: Reader = read_cryptofeed) -> Iterator[RawRecord]:
    """The JSON records of a capture."""
    for rec in reader(str(path)):
        if rec.kind == "json":
            yield rec


def messages(path: Path, reader: Reader = read_cryptofeed) -> Iterator[tuple[RawRecord, Any]]:
    """The JSON records of a capture with their decoded messages."""
    for rec in json_records(path, reader):
        yield rec, orjson.loads(rec.raw)


def parse_capture(venue: Venue, path: Path, reader: Reader = read_cryptofeed) -> list[Event]:
    """Every event of a capture, through one session opened with the first record's URL."""
    session = None
    out: list[Event] = []
    for rec, obj in messages(path, reader):
        if session is None:
            session = venue.session(rec.url)
        out.extend(session.parse(rec, obj))
    return out


def record(obj: Any, line: int = 1, local_us: int | None = None) -> RawRecord:
    """A record holding ``obj`` (its JSON, or the bytes given as they are)."""
    raw = obj if isinstance(obj, bytes) else orjson.dumps(obj)
    local = 1_700_000_000_000_000 + line if local_us is None else local_us
    return RawRecord("t", line, local, "json", raw)


def feed(auditors: dict[Any, Any], ev: Any, rules: VenueRules | None = None, by: Any = None) -> Any:
    """Feed ``ev`` to the auditor of its stream (kept under ``by``, default the stream key),
    made on first use with ``rules`` (default: those of the event's exchange)."""
    name = ev.key if by is None else by
    a = auditors.get(name)
    if a is None:
        a = auditors[name] = _AUDITORS[type(ev)](
            ev.key, rules_for(ev.key.exchange) if rules is None else rules, AuditConfig()
        )
    a.feed(ev)
    return a


def audit_events(events: Iterable[Event]) -> tuple[dict[StreamKey, Any], dict[StreamKey, StreamResult]]:
    """The auditors of the events' streams, and their results."""
    auditors: dict[StreamKey, Any] = {}
    for ev in events:
        feed(auditors, ev)
    return auditors, {k: a.finish() for k, a in auditors.items()}


@dataclasses.dataclass
class Audit:
    results: dict[StreamKey, StreamResult]
    verified: Counter[StreamKey]
    malformed: list[tuple[int, str]]
    events: list[BookMsg | TradeMsg | FundingMsg]
    session: Any


def audit(recs: Iterable[RawRecord], venue: Venue) -> Audit:
    """Drive a capture the way the engine does (a message that does not parse is recorded as
    malformed), counting the checksums actually compared."""
    session = None
    auditors: dict[StreamKey, Any] = {}
    verified: Counter[StreamKey] = Counter()
    malformed: list[tuple[int, str]] = []
    events: list[BookMsg | TradeMsg | FundingMsg] = []
    for rec in recs:
        obj = orjson.loads(rec.raw)
        if session is None:
            session = venue.session(rec.url)
        try:
            evs = session.parse(rec, obj)
        except (ValueError, KeyError, TypeError) as exc:
            malformed.append((rec.line, repr(exc)))
            continue
        for ev in evs:
            assert not isinstance(ev, Disconnect)
            events.append(ev)
            rules = None
            if ev.key not in auditors:
                rules = rules_for(ev.key.exchange)
                if rules.checksum is not None:
                    rules = dataclasses.replace(rules, checksum=_counting(verified, ev.key, rules.checksum))
            feed(auditors, ev, rules)
    return Audit({k: a.finish() for k, a in auditors.items()}, verified, malformed, events, session)


def _counting(
    verified: Counter[StreamKey], key: StreamKey, fn: Callable[[Book], int]
) -> Callable[[Book], int]:
    def checksum(book: Book) -> int:
        verified[key] += 1
        return fn(book)

    return checksum


def faults(a: Audit, kind: str) -> int:
    """How many faults of one kind all streams found."""
    return sum(r.faults[kind] for r in a.results.values())


def first_update_at_top(
    recs: list[RawRecord],
    venue: Venue,
    side: str,
    live: Callable[[Any], bool],
    *,
    with_checksum: bool = False,
    books_only: bool = False,
) -> int | None:
    """The line of the first book update whose first ``live`` level on ``side`` ("bids" or
    "asks") is then that side's best level (so it is inside any top N); with
    ``with_checksum``, only updates that carry a checksum count; with ``books_only``, every
    event must be a book message."""
    session = venue.session(recs[0].url)
    books: dict[StreamKey, Any] = {}
    found = None
    for rec in recs:  # to the end: every message must parse (and, with books_only, be a book)
        for ev in session.parse(rec, orjson.loads(rec.raw)):
            if not isinstance(ev, BookMsg):
                assert not books_only, rec.line
                continue
            a = feed(books, ev)
            if found is not None or ev.snapshot or (with_checksum and ev.checksum is None):
                continue
            levels = [lv for lv in getattr(ev, side) if live(lv)]
            best = getattr(a.book, side).best()
            if levels and best and best[0] == levels[0][0]:
                found = rec.line
    return found


def rewrite(recs: Iterable[RawRecord], line: int, edit: Callable[[Any], None]) -> None:
    """Change the message of the record at ``line`` in place: decode it, ``edit`` it, encode it."""
    for rec in recs:
        if rec.line == line:
            obj = orjson.loads(rec.raw)
            edit(obj)
            rec.raw = orjson.dumps(obj)


def findings(a: Audit, fault: str) -> list[Any]:
    """The findings of one fault over all streams."""
    return [f for r in a.results.values() for f in r.findings if f.fault == fault]
