"""One fault put by hand into each venue's real capture: the audit finds what the contract
defines, and nothing else.

For every venue with book data in ``tests/data``, one book message of one stream is
repeated right after itself, two consecutive messages of that stream are swapped, or one is
dropped.  The changed capture is audited whole and compared with the untouched capture's
audit, stream by stream (messages, every fault count, gaps, notes): only what the fault
explains may differ.  Swaps exchange whole lines, receive times included, as
``test_injected_faults.py`` does.  What the contract implies per kind of venue:

- **ids** (Binance, Deribit, Bybit v5, Kraken Futures, Bitfinex): a repeat is one
  ``duplicate`` (not applied: checksums and books are as before); a swap is one
  ``out_of_order`` (the late message is put back in its place, nothing else changes); a drop
  is one ``gap`` whose ``after`` is the last id applied, ``before`` the next message's first
  id and ``missing`` the count of ids where the venue numbers them one by one (else null).
  Bitfinex numbers the whole connection: a lost message may have belonged to any channel,
  so every book stream whose next message lies beyond it reports one gap.
- **checksum, no ids** (OKX before ``seqId``, Kraken, FTX, FTX US, FTX Turkey): a repeat
  is one ``duplicate`` (byte-identical, same exchange time); a swap cannot be put back (no
  order to tell), so the first message applied early leaves a book whose checksum differs
  from the one it carries (one ``checksum_mismatch``, the book unsafe until the next
  snapshot) and the second goes back in exchange time (one ``timestamp_drift``); a drop
  leaves the next message's checksum wrong (one ``checksum_mismatch``; the dropped message
  was chosen to change levels the checksum covers).
- **neither ids nor checksum, exchange time in the message** (Coinbase, Bybit v2): a repeat
  is one ``duplicate``; a swap shows only as time going back (one ``timestamp_drift``); a
  drop cannot be seen: nothing.
- **neither ids nor exchange time** (BitMEX ``orderBookL2``): the contract's duplicate needs
  the same exchange time, which the message does not hold, and identical bytes recur
  legitimately there (a level deleted, re-inserted and deleted again), so a repeat is
  applied again, which changes nothing (levels are absolute; a repeated delete deletes
  nothing); a swap and a drop cannot be seen.  Only the message count changes.
"""

from __future__ import annotations

import gzip
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest

import shared.engine
from shared.auditors import AuditConfig, StreamResult
from shared.book import Book
from shared.engine import AuditOutcome, Engine
from shared.exchanges import rules_for, venue_for_file, venue_for_message, venue_for_url
from shared.exchanges.base import VenueRules
from shared.formats.detect import detect
from shared.formats.readers import READERS
from shared.model import BookMsg, StreamKey, TradeMsg
from shared.sequencing import CONSECUTIVE

DATA = Path(__file__).parent / "data"
CF = DATA / "cryptofeed"


# -- capture handling ------------------------------------------------------------------


@dataclass(frozen=True)
class Capture:
    path: Path
    companions: tuple[Path, ...] = ()  # read with it (Binance REST snapshots)

    @property
    def name(self) -> str:
        return self.path.name


def _binance(name: str) -> Capture:
    return Capture(CF / f"{name}.ws.1.0", (CF / f"{name}.http.0.0",))


@cache
def _lines(cap: Capture) -> tuple[bytes, ...]:
    data = cap.path.read_bytes()
    if cap.path.suffix == ".gz":
        data = gzip.decompress(data)
    return tuple(data.splitlines(keepends=True))


@cache
def _events(cap: Capture) -> tuple[tuple[int, Any], ...]:
    """(line, event) of the capture's market data, as the engine's venue sessions parse it."""
    path = str(cap.path)
    fmt = detect(path)
    assert fmt is not None
    session = None
    out: list[tuple[int, Any]] = []
    for rec in READERS[fmt](path):
        if rec.kind != "json":
            continue
        obj = orjson.loads(rec.raw)
        if session is None:
            venue = (
                (venue_for_url(rec.url) if rec.url else None)
                or venue_for_file(cap.name)
                or venue_for_message(obj)
            )
            assert venue is not None
            session = venue.session(rec.url)
        out.extend((rec.line, ev) for ev in session.parse(rec, obj))
    return tuple(out)


def _stream(cap: Capture, key: StreamKey, kind: type) -> list[tuple[int, Any]]:
    """The stream's book updates, or trades received live, with their lines."""
    return [
        (line, ev)
        for line, ev in _events(cap)
        if isinstance(ev, kind)
        and ev.key == key
        and (ev.local_us is not None if kind is TradeMsg else not ev.snapshot)
    ]


def _repeated(lines: tuple[bytes, ...], line: int) -> list[bytes]:
    i = line - 1
    return [*lines[: i + 1], lines[i], *lines[i + 1 :]]


def _swapped(lines: tuple[bytes, ...], a: int, b: int) -> list[bytes]:
    out = list(lines)
    out[a - 1], out[b - 1] = out[b - 1], out[a - 1]
    return out


def _dropped(lines: tuple[bytes, ...], line: int) -> list[bytes]:
    return [*lines[: line - 1], *lines[line:]]


# -- auditing --------------------------------------------------------------------------


@dataclass
class Audit:
    outcome: AuditOutcome
    verified: Counter[str]  # checksums compared, per exchange

    def stream(self, key: StreamKey) -> StreamResult:
        return next(s for s in self.outcome.streams if s.key == key)

    def lines(self, key: StreamKey, fault: str) -> list[int]:
        return [f.line for f in self.stream(key).findings if f.fault == fault]


@contextmanager
def _counting_checksums(verified: Counter[str]) -> Iterator[None]:
    def rules(exchange: str) -> VenueRules:
        r = rules_for(exchange)
        fn = r.checksum
        if fn is None:
            return r

        def checksum(book: Book, fn: Callable[[Book], int] = fn) -> int:
            verified[exchange] += 1
            return fn(book)

        return replace(r, checksum=checksum)

    with mock.patch.object(shared.engine, "rules_for", rules):
        yield


def _audit(cap: Capture, lines: list[bytes] | tuple[bytes, ...], tmp: Path) -> Audit:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / cap.name
    data = b"".join(lines)
    path.write_bytes(gzip.compress(data) if cap.path.suffix == ".gz" else data)
    verified: Counter[str] = Counter()
    with _counting_checksums(verified):
        outcome = Engine(AuditConfig()).run([str(path), *(str(p) for p in cap.companions)])
    return Audit(outcome, verified)


_CLEAN: dict[Capture, Audit] = {}


def _clean(cap: Capture, tmp_factory: pytest.TempPathFactory) -> Audit:
    if cap not in _CLEAN:
        _CLEAN[cap] = _audit(cap, _lines(cap), tmp_factory.mktemp("clean"))
    return _CLEAN[cap]


def _changes(clean: Audit, faulty: Audit) -> dict[StreamKey, dict[str, Any]]:
    """Per stream, what differs: message and fault counts (as differences), the gaps and notes
    of the changed capture when they differ.  Inputs and malformed lines must not differ."""
    assert not faulty.outcome.malformed and not clean.outcome.malformed
    a = {s.key: s for s in clean.outcome.streams}
    b = {s.key: s for s in faulty.outcome.streams}
    assert set(a) == set(b)
    out: dict[StreamKey, dict[str, Any]] = {}
    for key in a:
        x, y = a[key], b[key]
        d: dict[str, Any] = {}
        if y.messages != x.messages:
            d["messages"] = y.messages - x.messages
        for kind in sorted(set(x.faults) | set(y.faults)):
            n = y.faults.get(kind, 0) - x.faults.get(kind, 0)
            if n:
                d[kind] = n
        gaps = [(g.after, g.before, g.missing) for g in y.gaps]
        if gaps != [(g.after, g.before, g.missing) for g in x.gaps]:
            d["gaps"] = gaps
        if y.notes != x.notes:
            d["notes"] = y.notes
        if d:
            out[key] = d
    return out


# -- the cases -------------------------------------------------------------------------

IDS = "ids"
CHECKSUM = "checksum"
TIME_ONLY = "time only"
NOTHING = "nothing"


@dataclass(frozen=True)
class Case:
    id: str
    capture: Capture
    key: StreamKey
    kind: str
    repeat: int  # the line repeated right after itself
    swap: tuple[int, int]  # two consecutive messages of the stream
    drop: int

    def __str__(self) -> str:
        return self.id


def _key(exchange: str, symbol: str, channel: str = "book") -> StreamKey:
    return StreamKey(exchange, symbol, channel)


FTX = DATA / "cryptofeed_ftx"
DERIBIT = DATA / "cryptofeed_deribit"

# Lines (of the capture file) inside each stream, with messages of the stream before and after.
# Checksum venues: the dropped message changes levels the checksum covers (a change below the
# checksummed depth would be invisible), and the swapped pair has two exchange times (the
# tests check it).  The dropped messages are not themselves drift findings.
BOOKS = [
    Case("binance", _binance("BINANCE"), _key("binance", "NKNUSDT"), IDS, 205, (205, 206), 205),
    Case(
        "binance-futures",
        _binance("BINANCE_FUTURES"),
        _key("binance-futures", "SUSHIUSDT"),
        IDS,
        1154,
        (1154, 1157),
        1154,
    ),
    Case(
        "binance-delivery",
        _binance("BINANCE_DELIVERY"),
        _key("binance-delivery", "BCHUSD_PERP"),
        IDS,
        2407,
        (2407, 2417),
        2407,
    ),
    Case("okex", Capture(CF / "OKX.ws.1.0"), _key("okex", "BTC-USDT"), CHECKSUM, 224, (224, 227), 224),
    Case(
        "kraken",
        Capture(CF / "KRAKEN.ws.50.0"),
        _key("kraken", "OMG/USD"),
        CHECKSUM,
        2481,
        (2481, 2486),
        2481,
    ),
    Case("ftx", Capture(FTX / "FTX.ws.1.0"), _key("ftx", "BTC-1231"), CHECKSUM, 1056, (1056, 1058), 1056),
    Case(
        "ftx-2021-04",
        Capture(DATA / "cryptofeed_ftx_2021-04" / "FTX.ws.32.0"),
        _key("ftx", "XRP/USD"),
        CHECKSUM,
        1380,
        (1380, 1386),
        1380,
    ),
    Case(
        "ftx-us", Capture(FTX / "FTX_US.ws.34.0"), _key("ftx-us", "USDT/USD"), CHECKSUM, 695, (695, 699), 695
    ),
    Case(
        "ftx-tr",
        Capture(FTX / "FTX_TR.ws.1.0"),
        _key("ftx-tr", "USD/TRY"),
        CHECKSUM,
        2987,
        (2987, 3038),
        2987,
    ),
    Case(
        "deribit",
        Capture(DERIBIT / "DERIBIT.ws.30.0"),
        _key("deribit", "BTC-18APR21-62000-C"),
        IDS,
        117,
        (117, 119),
        117,
    ),
    Case(
        "deribit-2021-04-05",
        Capture(DERIBIT / "DERIBIT-5dd9ce.0"),
        _key("deribit", "ETH-30APR21-2240-P"),
        IDS,
        249,
        (249, 256),
        249,
    ),
    Case(
        "bybit-v5",
        Capture(DATA / "nautilus" / "2024-12-01_XRPUSDT_ob500.data"),
        _key("bybit", "XRPUSDT"),
        IDS,
        26,
        (26, 27),
        26,
    ),
    Case(
        "bybit-v2",
        Capture(CF / "BYBIT.ws.25.0"),
        _key("bybit", "BCHUSDT"),
        TIME_ONLY,
        1701,
        (1701, 1703),
        1701,
    ),
    Case(
        "cryptofacilities",
        Capture(CF / "KRAKEN_FUTURES.ws.1.0"),
        _key("cryptofacilities", "PI_ETHUSD"),
        IDS,
        3638,
        (3638, 3639),
        3638,
    ),
    Case("bitfinex", Capture(CF / "BITFINEX.ws.11.0"), _key("bitfinex", "IOTETH"), IDS, 894, (894, 895), 894),
    Case(
        "coinbase",
        Capture(CF / "COINBASE.ws.28.0"),
        _key("coinbase", "SKL-USD"),
        TIME_ONLY,
        7423,
        (7423, 7424),
        7423,
    ),
    # The repeated message deletes a level (a repeated delete must not make a level invalid).
    Case("bitmex", Capture(CF / "BITMEX.ws.1.0"), _key("bitmex", "XBTUSD"), NOTHING, 78, (1617, 1619), 1617),
]


def _update(case: Case, line: int) -> tuple[int, BookMsg]:
    """The index of the stream's update at ``line`` among the stream's updates, and it."""
    stream = _stream(case.capture, case.key, BookMsg)
    found = [i for i, (ln, _) in enumerate(stream) if ln == line]
    assert len(found) == 1, f"line {line} is not an update of {case.key.label()}"
    assert sum(1 for ln, _ in _events(case.capture) if ln == line) == 1  # one event: one stream
    return found[0], stream[found[0]][1]


@pytest.mark.parametrize("case", BOOKS, ids=str)
def test_book_message_repeated(case: Case, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    _update(case, case.repeat)
    clean = _clean(case.capture, tmp_path_factory)
    faulty = _audit(case.capture, _repeated(_lines(case.capture), case.repeat), tmp_path)
    if case.kind == NOTHING:
        assert _changes(clean, faulty) == {case.key: {"messages": 1}}
        return
    assert _changes(clean, faulty) == {case.key: {"messages": 1, "duplicate": 1}}
    assert faulty.lines(case.key, "duplicate") == [case.repeat + 1]
    # Not applied twice: the same checksums were compared (and all still verify).
    assert faulty.verified == clean.verified
    if case.kind == CHECKSUM:
        assert clean.verified[case.key.exchange] > 0


@pytest.mark.parametrize("case", BOOKS, ids=str)
def test_book_messages_swapped(case: Case, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    a, b = case.swap
    i, first = _update(case, a)
    j, second = _update(case, b)
    assert j == i + 1  # consecutive messages of the stream
    clean = _clean(case.capture, tmp_path_factory)
    faulty = _audit(case.capture, _swapped(_lines(case.capture), a, b), tmp_path)
    changes = _changes(clean, faulty)
    if case.kind == IDS:
        # The first message, now at line b, arrived late and is put back in its place.
        assert changes == {case.key: {"out_of_order": 1}}
        assert faulty.lines(case.key, "out_of_order") == [b]
    elif case.kind == CHECKSUM:
        # No order to restore: the second message, now at line a, is applied first and its
        # checksum (of the book with the first one applied) does not match; the first one then
        # goes back in exchange time.
        assert first.exch_us is not None and second.exch_us is not None and first.exch_us < second.exch_us
        assert changes == {case.key: {"checksum_mismatch": 1, "timestamp_drift": 1}}
        assert faulty.lines(case.key, "checksum_mismatch") == [a]
        assert _went_back(faulty, case.key) == [b]
    elif case.kind == TIME_ONLY:
        assert first.exch_us is not None and second.exch_us is not None and first.exch_us < second.exch_us
        assert changes == {case.key: {"timestamp_drift": 1}}
        assert _went_back(faulty, case.key) == [b]
    else:
        assert first.exch_us is None and second.exch_us is None
        assert changes == {}


def _went_back(audit: Audit, key: StreamKey) -> list[int]:
    return [
        f.line
        for f in audit.stream(key).findings
        if f.fault == "timestamp_drift" and f.detail.get("reason") == "exchange time went backwards"
    ]


@pytest.mark.parametrize("case", BOOKS, ids=str)
def test_book_message_dropped(case: Case, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    i, dropped = _update(case, case.drop)
    stream = _stream(case.capture, case.key, BookMsg)
    assert 0 < i < len(stream) - 1  # a message of the stream comes before and after it
    next_line, after_it = stream[i + 1]
    clean = _clean(case.capture, tmp_path_factory)
    faulty = _audit(case.capture, _dropped(_lines(case.capture), case.drop), tmp_path)
    changes = _changes(clean, faulty)
    if case.key.exchange == "bitfinex":
        assert changes == _bitfinex_gaps(case, dropped)
        assert faulty.lines(case.key, "gap") == [next_line - 1]
    elif case.kind == IDS:
        before_it = stream[i - 1][1]
        rule = rules_for(case.key.exchange).book_rule
        first = after_it.first_id if after_it.first_id is not None else after_it.last_id
        missing = first - before_it.last_id - 1 if rule is CONSECUTIVE else None
        assert changes == {
            case.key: {"messages": -1, "gap": 1, "gaps": [(before_it.last_id, first, missing)]}
        }
        assert faulty.lines(case.key, "gap") == [next_line - 1]
    elif case.kind == CHECKSUM:
        assert changes == {case.key: {"messages": -1, "checksum_mismatch": 1}}
        assert faulty.lines(case.key, "checksum_mismatch") == [next_line - 1]
    else:
        assert changes == {case.key: {"messages": -1}}


def _bitfinex_gaps(case: Case, dropped: BookMsg) -> dict[StreamKey, dict[str, Any]]:
    """Every book stream whose next message lies beyond the lost connection seq reports one
    gap, from its last seq before to its first seq after (how many of its own messages were
    lost cannot be known)."""
    seq = dropped.last_id
    assert seq is not None
    expected: dict[StreamKey, dict[str, Any]] = {}
    books = [ev for _, ev in _events(case.capture) if isinstance(ev, BookMsg) and ev is not dropped]
    for key in {ev.key for ev in books}:
        mine = [ev.last_id for ev in books if ev.key == key]
        before = [s for s in mine if s < seq]
        after = [s for s in mine if s > seq]
        if before and after:
            expected[key] = {"gap": 1, "gaps": [(before[-1], after[0], None)]}
    expected[case.key]["messages"] = -1
    assert len(expected) >= 2
    return expected


# -- trades ----------------------------------------------------------------------------

KRAKEN_REST = Capture(DATA / "nautilus" / "http_trades.json")


@dataclass(frozen=True)
class TradeCase:
    id: str
    capture: Capture
    key: StreamKey
    kind: str  # IDS (consecutive), "increasing", or TIME_ONLY (no ids, or ids that only repeat)
    repeat: int
    swap: tuple[int, int]
    drop: int

    def __str__(self) -> str:
        return self.id


INCREASING = "increasing"

TRADES = [
    TradeCase(
        "binance-futures",
        _binance("BINANCE_FUTURES"),
        _key("binance-futures", "SUSHIUSDT", "trades"),
        IDS,
        1089,
        (1089, 1109),
        1089,
    ),
    TradeCase(
        "binance-delivery",
        _binance("BINANCE_DELIVERY"),
        _key("binance-delivery", "ETCUSD_PERP", "trades"),
        IDS,
        2756,
        (2756, 3615),
        2756,
    ),
    TradeCase(
        "coinbase",
        Capture(CF / "COINBASE.ws.28.0"),
        _key("coinbase", "SKL-USD", "trades"),
        IDS,
        8410,
        (8410, 8438),
        8410,
    ),
    # FTX trade ids are shared by all markets: ordering and repeats can be told, losses cannot.
    TradeCase(
        "ftx-tr",
        Capture(FTX / "FTX_TR.ws.1.0"),
        _key("ftx-tr", "SOL/USD", "trades"),
        INCREASING,
        1028,
        (1028, 1070),
        1028,
    ),
    TradeCase(
        "ftx-2021-04",
        Capture(DATA / "cryptofeed_ftx_2021-04" / "FTX.ws.32.0"),
        _key("ftx", "XRP/USD", "trades"),
        INCREASING,
        1775,
        (1775, 1824),
        1775,
    ),
    # Kraken WS v1 trades have no id: a repeat is known by the message's bytes.
    TradeCase(
        "kraken-ws",
        Capture(CF / "KRAKEN.ws.48.0"),
        _key("kraken", "SC/EUR", "trades"),
        TIME_ONLY,
        45,
        (45, 46),
        45,
    ),
    # Bybit trade ids are UUIDs: repeats can be told, order and losses cannot.
    TradeCase(
        "bybit-v2",
        Capture(CF / "BYBIT.ws.26.0"),
        _key("bybit", "BTCUSD", "trades"),
        TIME_ONLY,
        354,
        (354, 360),
        354,
    ),
]


def _trade(case: TradeCase, line: int) -> tuple[int, TradeMsg]:
    stream = _stream(case.capture, case.key, TradeMsg)
    found = [i for i, (ln, _) in enumerate(stream) if ln == line]
    assert len(found) == 1, f"line {line} is not one live trade of {case.key.label()}"
    assert sum(1 for ln, _ in _events(case.capture) if ln == line) == 1
    return found[0], stream[found[0]][1]


@pytest.mark.parametrize("case", TRADES, ids=str)
def test_trade_message_repeated(
    case: TradeCase, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _trade(case, case.repeat)
    clean = _clean(case.capture, tmp_path_factory)
    faulty = _audit(case.capture, _repeated(_lines(case.capture), case.repeat), tmp_path)
    assert _changes(clean, faulty) == {case.key: {"messages": 1, "duplicate": 1}}
    assert faulty.lines(case.key, "duplicate") == [case.repeat + 1]


@pytest.mark.parametrize("case", TRADES, ids=str)
def test_trade_messages_swapped(
    case: TradeCase, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    a, b = case.swap
    i, first = _trade(case, a)
    j, second = _trade(case, b)
    assert j == i + 1
    clean = _clean(case.capture, tmp_path_factory)
    faulty = _audit(case.capture, _swapped(_lines(case.capture), a, b), tmp_path)
    changes = _changes(clean, faulty)
    if case.kind in (IDS, INCREASING):
        # Consecutive ids: put back in place.  Increasing ids: applied where it arrived, and
        # reported once (not again as time going back).
        assert changes == {case.key: {"out_of_order": 1}}
        assert faulty.lines(case.key, "out_of_order") == [b]
    else:
        assert first.exch_us is not None and second.exch_us is not None and first.exch_us < second.exch_us
        assert changes == {case.key: {"timestamp_drift": 1}}
        assert _went_back(faulty, case.key) == [b]


@pytest.mark.parametrize("case", TRADES, ids=str)
def test_trade_message_dropped(
    case: TradeCase, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    i, dropped = _trade(case, case.drop)
    stream = _stream(case.capture, case.key, TradeMsg)
    assert 0 < i < len(stream) - 1
    clean = _clean(case.capture, tmp_path_factory)
    faulty = _audit(case.capture, _dropped(_lines(case.capture), case.drop), tmp_path)
    changes = _changes(clean, faulty)
    if case.kind == IDS:
        lost = dropped.trade_id
        assert isinstance(lost, int)
        assert changes == {case.key: {"messages": -1, "gap": 1, "gaps": [(lost - 1, lost + 1, 1)]}}
        assert faulty.lines(case.key, "gap") == [stream[i + 1][0] - 1]
    else:
        assert changes == {case.key: {"messages": -1}}


# Kraken REST trades: one answer holding 1000 trades with consecutive ids; the faults are put
# into its trade list (each trade is a block of lines of the pretty-printed JSON).

_ROW = re.compile(
    rb"\[\s*\"[^\"]*\",\s*\"[^\"]*\",\s*[0-9.]+,\s*\"[bs]\",\s*\"[lm]\",\s*\"[^\"]*\",\s*\d+\s*\]"
)


def _kraken_rest(edit: Callable[[list[bytes]], list[bytes]]) -> list[bytes]:
    text = b"".join(_lines(KRAKEN_REST))
    rows = list(_ROW.finditer(text))
    assert len(rows) == 1000
    start, end = rows[0].start(), rows[-1].end()
    body = [m.group(0) for m in rows]
    return [text[:start] + b",".join(edit(body)) + text[end:]]


def _rest_ids(rows: list[bytes]) -> list[int]:
    return [int(r.rsplit(b",", 1)[1].strip(b" \n]")) for r in rows]


KRAKEN_REST_KEY = _key("kraken", "XBTUSDT", "trades")


def test_kraken_rest_trades(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    clean = _clean(KRAKEN_REST, tmp_path_factory)
    assert clean.stream(KRAKEN_REST_KEY).messages == 1000 and clean.stream(KRAKEN_REST_KEY).gaps == []
    ids = _rest_ids([m.group(0) for m in _ROW.finditer(b"".join(_lines(KRAKEN_REST)))])
    assert ids == list(range(ids[0], ids[0] + 1000))
    k = 500
    repeat = _audit(KRAKEN_REST, _kraken_rest(lambda r: [*r[: k + 1], r[k], *r[k + 1 :]]), tmp_path / "r")
    assert _changes(clean, repeat) == {KRAKEN_REST_KEY: {"messages": 1, "duplicate": 1}}
    swap = _audit(KRAKEN_REST, _kraken_rest(lambda r: [*r[:k], r[k + 1], r[k], *r[k + 2 :]]), tmp_path / "s")
    assert _changes(clean, swap) == {KRAKEN_REST_KEY: {"out_of_order": 1}}
    drop = _audit(KRAKEN_REST, _kraken_rest(lambda r: [*r[:k], *r[k + 1 :]]), tmp_path / "d")
    lost = ids[k]
    assert _changes(clean, drop) == {
        KRAKEN_REST_KEY: {"messages": -1, "gap": 1, "gaps": [(lost - 1, lost + 1, 1)]}
    }
