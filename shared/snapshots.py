"""Rebuilt books as Tardis ``book_snapshot_<depth>`` rows, collected per stream.

The engine calls a :class:`BookRows` every ``--book-interval`` of receive time; the rows
travel with a segment's result (so a worker needs no shared disk) and
:func:`shared.report.write_outputs` writes them, one CSV per stream.  Every value is text,
so the rows are the same bytes whether they were written in-process or went through JSON.
"""

from __future__ import annotations

from typing import Any

from shared.book import Book
from shared.model import StreamKey
from shared.numbers import as_text

Row = list[str]


def header(depth: int) -> Row:
    cols = ["exchange", "symbol", "timestamp", "local_timestamp"]
    for i in range(depth):
        cols += [f"asks[{i}].price", f"asks[{i}].amount", f"bids[{i}].price", f"bids[{i}].amount"]
    return cols


class BookRows:
    """A book sink that keeps ``book_snapshot`` rows per stream, in the order taken."""

    def __init__(self, depth: int = 25) -> None:
        self.depth = depth
        self.rows: dict[StreamKey, list[Row]] = {}

    def __call__(self, key: StreamKey, local_us: int, exch_us: int | None, book: Book) -> None:
        depth = self.depth
        self.add(key, local_us, exch_us, book.bids.top(depth), book.asks.top(depth))

    def add(
        self, key: StreamKey, local_us: int, exch_us: int | None, bids: list[Any], asks: list[Any]
    ) -> None:
        """One row from the best levels of each side (price, quantity), best first."""
        depth = self.depth
        # As Tardis does: the exchange's time, or the receive time where the venue sends none.
        row: Row = [key.exchange, key.symbol, str(local_us if exch_us is None else exch_us), str(local_us)]
        for i in range(depth):
            for side in (asks, bids):
                if i < len(side):
                    row += [as_text(side[i][0]), as_text(side[i][1])]
                else:
                    row += ["", ""]
        self.rows.setdefault(key, []).append(row)

    def extend(self, other: BookRows) -> None:
        for key, rows in other.rows.items():
            self.rows.setdefault(key, []).extend(rows)

    def as_json(self) -> list[Any]:
        return [[list(key), rows] for key, rows in self.rows.items()]

    @classmethod
    def from_json(cls, depth: int, data: list[Any]) -> BookRows:
        out = cls(depth)
        for key, rows in data:
            out.rows[StreamKey(*key)] = rows
        return out
