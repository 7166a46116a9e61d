"""Deribit (``deribit``), JSON-RPC over WebSocket (API v2).

Messages: ``{"jsonrpc": "2.0", "method": "subscription", "params": {"channel", "data"}}``.

- ``book.<instrument>.raw`` / ``book.<instrument>.100ms``: ``data`` has ``type``
  (``snapshot``/``change``), ``change_id``, ``prev_change_id`` (absent on the snapshot),
  ``timestamp`` (ms) and ``bids``/``asks`` as ``[action, price, amount]`` triples with
  ``action`` one of ``new``/``change``/``delete``.  Levels become ``[price, amount]`` with
  the numbers as decoded (``delete`` becomes amount ``0``).  Rule: ``prev_change_id ==
  previous change_id`` (PREV_LINK; ids are not consecutive, a gap's size is unknown).
- ``trades.<instrument>.<interval>``: ``data`` is a list of trades with ``trade_seq``
  (consecutive per instrument: the id the trade rule checks), ``trade_id`` (text),
  ``price``, ``amount``, ``direction`` (the taker's side) and ``timestamp`` (ms).

Not parsed (no events): the grouped book ``book.<instrument>.<group>.<depth>.<interval>``
(a different stream that would share the book's key), tickers, platform messages and
JSON-RPC answers.  Funding is not emitted: Deribit perpetuals fund continuously (the
ticker's ``current_funding``/``funding_8h`` are running estimates, not settlements), so
there is no settlement schedule for the funding check to follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.exchanges._fields import as_dict, integer, objects, symbol_text
from shared.exchanges.base import UnknownEvent, Venue, VenueRules, ms_to_us
from shared.model import BookMsg, Channel, Event, RawRecord, StreamKey, TradeMsg
from shared.sequencing import CONSECUTIVE, PREV_LINK

EXCHANGE = "deribit"

RULES = (VenueRules(EXCHANGE, book_rule=PREV_LINK, trade_rule=CONSECUTIVE),)

_BOOK_INTERVALS = frozenset(("raw", "100ms", "agg2"))


def _sniff(obj: Any) -> bool:
    if not isinstance(obj, dict) or obj.get("jsonrpc") != "2.0":
        return False
    params = obj.get("params")
    if obj.get("method") == "subscription" and isinstance(params, dict):
        channel = params.get("channel")
        return isinstance(channel, str) and channel.split(".", 1)[0] in ("book", "trades", "ticker")
    return "usIn" in obj  # Deribit's answers carry usIn/usOut/usDiff


def _levels(side: Any, what: str) -> list[list[Any]]:
    out: list[list[Any]] = []
    for action, price, amount in side:
        if action == "delete":
            out.append([price, 0])
        elif action == "new" or action == "change":
            out.append([price, amount])
        else:
            raise ValueError(f"unknown {what} level action {action!r}")
    return out


class DeribitSession:
    """One capture's worth of Deribit messages (no connection state is needed)."""

    def __init__(self, url: str | None) -> None:
        self.url = url

    def parse(self, rec: RawRecord, obj: Any) -> Sequence[Event]:
        if not isinstance(obj, dict) or obj.get("method") != "subscription":
            return ()
        params = obj["params"]
        channel = params["channel"]
        if not isinstance(channel, str):
            raise ValueError("subscription without a channel name")
        parts = channel.split(".")
        kind = parts[0]
        if kind == "book":
            if len(parts) != 3 or parts[2] not in _BOOK_INTERVALS:
                return ()  # grouped book: not an incremental stream
            return self._book(rec, as_dict(params["data"], "book data"), parts[1])
        if kind == "trades":
            return self._trades(rec, params["data"], parts[1])
        return ()

    def _book(self, rec: RawRecord, d: dict[str, Any], channel_symbol: str) -> Sequence[Event]:
        symbol = symbol_text(d.get("instrument_name") or channel_symbol)
        change_id = integer(d["change_id"], "change_id")
        prev = d.get("prev_change_id")
        kind = d.get("type")
        if kind is not None and kind not in ("snapshot", "change"):
            raise UnknownEvent(str(kind), f"book.{channel_symbol}")
        snapshot = kind == "snapshot" or prev is None
        return (
            BookMsg(
                StreamKey(EXCHANGE, symbol, Channel.BOOK),
                rec.local_us,
                ms_to_us(d.get("timestamp")),
                snapshot,
                _levels(d["bids"], "bid"),
                _levels(d["asks"], "ask"),
                rec.path,
                rec.line,
                last_id=change_id,
                prev_id=None if snapshot else integer(prev, "prev_change_id"),
            ),
        )

    def _trades(self, rec: RawRecord, data: Any, channel_symbol: str) -> Sequence[Event]:
        out: list[Event] = []
        for t in objects(data, "trades data", "trade"):
            symbol = symbol_text(t.get("instrument_name") or channel_symbol)
            out.append(
                TradeMsg(
                    StreamKey(EXCHANGE, symbol, Channel.TRADES),
                    rec.local_us,
                    ms_to_us(t.get("timestamp")),
                    integer(t["trade_seq"], "trade_seq"),
                    t["price"],
                    t["amount"],
                    t.get("direction"),
                    rec.path,
                    rec.line,
                )
            )
        return out


VENUE = Venue(
    name="deribit",
    url_marks=("deribit.com",),
    file_prefixes=("DERIBIT",),
    sniff=_sniff,
    session=DeribitSession,
    rules=RULES,
)
