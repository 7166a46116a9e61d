"""Tardis CSV datasets (``incremental_book_L2``, ``trades``, ``derivative_ticker``,
``book_snapshot_25``/``_5``), read as a stream of :class:`RawRecord`.

The dataset is recognised by the header's columns.  Rows become normalized events
(``kind="row"``): one :class:`TradeMsg` per trade row, one :class:`FundingMsg` per ticker
row, one snapshot :class:`BookMsg` per ``book_snapshot_N`` row.  ``incremental_book_L2``
splits one exchange message into consecutive rows sharing ``local_timestamp``: those rows
are grouped back into one :class:`BookMsg` (recorded at the group's first line), and the
group's 2nd..nth rows yield ``grouped`` records, so lines and records always add up.
Datasets with no market data for the auditors (quotes, liquidations, options_chain...)
yield one ``ignored`` record per row.

Timestamps are integer epoch microseconds; prices and amounts stay the exact text.  A
cut-off gzip ends with a ``malformed`` record; the last line read before the cut and the
book message still held (both possibly incomplete) are reported as malformed, not applied.
Book updates of venues without ids carry an identity (``BookMsg.raw``: levels and exchange
time), so a repeated message is a duplicate as it is in the venue's raw capture.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache

from shared.exchanges import rules_for
from shared.formats.detect import TARDIS_CSV_HEAD
from shared.formats.lines import LINE_TOO_LONG, TruncatedInput, iter_lines
from shared.model import BookMsg, Channel, FundingMsg, RawRecord, StreamKey, TradeMsg

L2 = "incremental_book_L2"
TRADES = "trades"
TICKER = "derivative_ticker"
SNAPSHOT = "book_snapshot"
OTHER = "other"

_BASE = ("exchange", "symbol", "timestamp", "local_timestamp")


class _BadRow(ValueError):
    """A row that cannot be read (wrong cell count, bad timestamp, unknown side...)."""


def _malformed(path: str, n: int, why: str) -> RawRecord:
    return RawRecord(path, n, None, "malformed", error=why)


def _cells(line: bytes) -> list[str]:
    text = line.decode("utf-8", "replace")
    if '"' in text:
        return next(csv.reader([text]))
    return text.split(",")


def _int_cell(text: str, name: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 18:
        raise _BadRow(f"{name} is not an integer epoch time in microseconds: {text[:40]!r}")
    return int(text)


def _opt_int_cell(text: str, name: str) -> int | None:
    return None if text == "" else _int_cell(text, name)


def dataset_of(columns: list[str], path: str) -> str:
    """The Tardis dataset a header describes (``other`` for those the auditors do not use)."""
    cols = set(columns)
    if {"is_snapshot", "side", "price", "amount"} <= cols:
        return L2
    if {"funding_timestamp", "funding_rate"} <= cols:
        return TICKER
    if "asks[0].price" in cols or "bids[0].price" in cols:
        return SNAPSHOT
    if {"id", "side", "price", "amount"} <= cols:
        # ``liquidations`` has exactly the columns of ``trades``: only the name tells.
        return OTHER if "liquidation" in os.path.basename(path).lower() else TRADES
    return OTHER


@dataclass(slots=True)
class _Group:
    """Consecutive incremental_book_L2 rows of one exchange message."""

    ident: tuple[str, str, str, bool]  # exchange, symbol, local_timestamp text, is_snapshot
    msg: BookMsg
    lines: list[int]


class _Table:
    """One header's worth of rows: turns cells into events."""

    def __init__(self, path: str, columns: list[str]) -> None:
        self.path = path
        self.columns = columns
        self.width = len(columns)
        self.dataset = dataset_of(columns, path)
        index = {name: i for i, name in enumerate(columns)}
        self.i = index
        self.row: Callable[[int, list[str]], RawRecord]
        if self.dataset == TRADES:
            self.row = self._trade
        elif self.dataset == TICKER:
            self.row = self._ticker
        elif self.dataset == SNAPSHOT:
            self.levels = self._snapshot_columns(index)
            self.row = self._snapshot
        else:
            self.row = self._other

    def check(self, cells: list[str]) -> tuple[int, int]:
        """Validate a row's shape and timestamps; returns (exch_us, local_us)."""
        if len(cells) != self.width:
            raise _BadRow(f"row has {len(cells)} cells, the header has {self.width}")
        return _int_cell(cells[2], "timestamp"), _int_cell(cells[3], "local_timestamp")

    def key(self, cells: list[str], channel: str) -> StreamKey:
        return StreamKey(cells[0], cells[1].upper(), channel)

    # -- datasets --------------------------------------------------------------------

    def _trade(self, n: int, cells: list[str]) -> RawRecord:
        exch, local = self.check(cells)
        i = self.i
        tid_text = cells[i["id"]]
        trade_id: int | str | None = (
            int(tid_text) if tid_text.isdigit() and tid_text.isascii() else tid_text or None
        )
        side = cells[i["side"]]
        msg = TradeMsg(
            self.key(cells, Channel.TRADES),
            local,
            exch,
            trade_id,
            cells[i["price"]],
            cells[i["amount"]],
            side if side and side != "unknown" else None,
            self.path,
            n,
        )
        return RawRecord(self.path, n, local, "row", obj=msg)

    def _ticker(self, n: int, cells: list[str]) -> RawRecord:
        exch, local = self.check(cells)
        i = self.i
        funding_time = _opt_int_cell(cells[i["funding_timestamp"]], "funding_timestamp")
        rate = cells[i["funding_rate"]] or None
        msg = FundingMsg(self.key(cells, Channel.FUNDING), local, exch, funding_time, rate, self.path, n)
        return RawRecord(self.path, n, local, "row", obj=msg)

    @staticmethod
    def _snapshot_columns(index: dict[str, int]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        sides: tuple[list[tuple[int, int]], list[tuple[int, int]]] = ([], [])
        for side, out in (("bids", sides[0]), ("asks", sides[1])):
            k = 0
            while f"{side}[{k}].price" in index and f"{side}[{k}].amount" in index:
                out.append((index[f"{side}[{k}].price"], index[f"{side}[{k}].amount"]))
                k += 1
        return sides

    def _snapshot(self, n: int, cells: list[str]) -> RawRecord:
        exch, local = self.check(cells)
        bid_cols, ask_cols = self.levels
        bids = [[cells[p], cells[q]] for p, q in bid_cols if cells[p] != "" or cells[q] != ""]
        asks = [[cells[p], cells[q]] for p, q in ask_cols if cells[p] != "" or cells[q] != ""]
        msg = BookMsg(self.key(cells, Channel.BOOK), local, exch, True, bids, asks, self.path, n)
        return RawRecord(self.path, n, local, "row", obj=msg)

    def _other(self, n: int, cells: list[str]) -> RawRecord:
        _, local = self.check(cells)
        return RawRecord(self.path, n, local, "ignored")


class _L2Table(_Table):
    """incremental_book_L2: rows are grouped into messages, one group held at a time."""

    def __init__(self, path: str, columns: list[str]) -> None:
        super().__init__(path, columns)
        i = self.i
        self.i_snap = i["is_snapshot"]
        self.i_side = i["side"]
        self.i_price = i["price"]
        self.i_amount = i["amount"]
        self.group: _Group | None = None

    def feed(self, n: int, cells: list[str]) -> Iterator[RawRecord]:
        """Records completed by this row (the previous group when this row starts a new one)."""
        exch, local = self.check(cells)
        flag = cells[self.i_snap]
        if flag == "true":
            snapshot = True
        elif flag == "false":
            snapshot = False
        else:
            raise _BadRow(f"is_snapshot is neither true nor false: {flag[:40]!r}")
        side = cells[self.i_side]
        if side not in ("bid", "ask"):
            raise _BadRow(f"side is neither bid nor ask: {side[:40]!r}")
        level = [cells[self.i_price], cells[self.i_amount]]
        ident = (cells[0], cells[1], cells[3], snapshot)
        group = self.group
        if group is not None and group.ident == ident:
            (group.msg.bids if side == "bid" else group.msg.asks).append(level)
            group.lines.append(n)
            return
        if group is not None:
            yield from self.flush()
        bids: list[list[str]] = []
        asks: list[list[str]] = []
        (bids if side == "bid" else asks).append(level)
        msg = BookMsg(self.key(cells, Channel.BOOK), local, exch, snapshot, bids, asks, self.path, n)
        self.group = _Group(ident, msg, [n])

    def flush(self) -> Iterator[RawRecord]:
        group = self.group
        if group is None:
            return
        self.group = None
        msg = group.msg
        if not msg.snapshot and not _numbered_books(msg.key.exchange):
            # A venue without ids: an update is known by its levels and exchange time (the
            # receive time left out), so a repeat of it is a duplicate.  Not where the venue
            # numbers its messages: this dataset drops the ids, and a level that goes back to
            # its value within one millisecond repeats the rows of a different message.
            msg.raw = repr((msg.exch_us, msg.bids, msg.asks)).encode()
        yield RawRecord(self.path, group.lines[0], msg.local_us, "row", obj=msg)
        for n in group.lines[1:]:
            yield RawRecord(self.path, n, msg.local_us, "grouped")

    def cut_off(self, why: str) -> Iterator[RawRecord]:
        """The input ended mid-stream: the held group may be missing rows, so it is not applied."""
        group = self.group
        if group is None:
            return
        self.group = None
        yield _malformed(self.path, group.lines[0], f"book message may be incomplete: {why}")
        for n in group.lines[1:]:
            yield RawRecord(self.path, n, group.msg.local_us, "grouped")


@cache
def _numbered_books(exchange: str) -> bool:
    """The venue numbers its book messages (the dataset drops the numbers)."""
    return rules_for(exchange).book_rule.has_ids


def _table(path: str, columns: list[str]) -> _Table:
    if dataset_of(columns, path) == L2:
        return _L2Table(path, columns)
    return _Table(path, columns)


@dataclass(slots=True)
class _Cut:
    """The compressed input ended early: ``held`` is the last line read (it may be cut off)."""

    line: int
    held: int | None
    why: str


def _lines_with_cut(path: str) -> Iterator[tuple[int, bytes] | _Cut]:
    """Numbered lines, each passed on only once the next one was read.

    When the stream is cut off, the last line read may be the head of a line whose end was
    lost, and a cut-off row can still have the right number of cells (``0.125`` read as
    ``0.1``), so it is reported, not applied.
    """
    held: tuple[int, bytes] | None = None
    n = 0
    try:
        for n, line in enumerate(iter_lines(path), 1):
            if held is not None:
                yield held
            held = (n, line)
    except TruncatedInput as exc:
        yield _Cut(n + 1, None if held is None else held[0], str(exc))
        return
    if held is not None:
        yield held


def read_tardis_csv(path: str) -> Iterator[RawRecord]:
    """Every line of a Tardis CSV file as one record (see the module docstring)."""
    table: _Table | None = None
    for item in _lines_with_cut(path):
        if isinstance(item, _Cut):
            if isinstance(table, _L2Table):
                yield from table.cut_off(item.why)
            if item.held is not None:
                yield _malformed(path, item.held, "last line before the cut-off may be incomplete")
            yield RawRecord.cut_off(path, item.line, item.why)
            return
        n, line = item
        if line is LINE_TOO_LONG:
            yield _malformed(path, n, "line longer than the reader's limit")
            continue
        if not line.strip():
            yield RawRecord(path, n, None, "blank")
            continue
        if line.startswith(TARDIS_CSV_HEAD):
            # A header (also one repeated inside concatenated files) starts a new table.
            if isinstance(table, _L2Table):
                yield from table.flush()
            table = _table(path, _cells(line))
            yield RawRecord(path, n, None, "header")
            continue
        if table is None:
            yield _malformed(path, n, "row before the Tardis CSV header")
            continue
        try:
            cells = _cells(line)
            if isinstance(table, _L2Table):
                yield from table.feed(n, cells)
            else:
                yield table.row(n, cells)
        except _BadRow as exc:
            yield _malformed(path, n, str(exc))
    if isinstance(table, _L2Table):
        yield from table.flush()


__all__ = ["dataset_of", "read_tardis_csv"]
