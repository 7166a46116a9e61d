"""An exact L2 order book tuned for replaying millions of level updates.

Each side is a ``dict`` from price text to quantity text (exactly as the exchange sent
them), plus a lazy heap of exact numeric keys (see :mod:`shared.numbers`) that gives the
best level in O(1) amortised and the top N levels by a best-first walk of the heap.
A price written two ways ("7.61" and "7.6100") is one level: the key-to-text map catches
the alias when a new text appears.

Keys are floats while every price of the side is a short plain decimal (exact, see
:mod:`shared.numbers`); the first price that needs more switches the whole side to
Decimal keys, so the two kinds are never compared.  Validation is cached per distinct
text: real streams repeat a small set of strings, so the hot path is two dict look-ups
per level.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from heapq import heapify, heappop, heappush
from typing import Any

from shared import compiled
from shared.numbers import INVALID, POSITIVE, ZERO, as_text, classify_qty, exact_decimal, order_key

Key = float | Decimal
_MISSING = object()
_CACHE_LIMIT = 400_000

# Validation caches for text (str keys only: 1 == 1.0 == True must never share an entry).
_QTY_CLASS: dict[str, int] = {}
_PRICE_KEY: dict[str, Any] = {}


def _qty_class(q: Any) -> int:
    if type(q) is not str:
        return classify_qty(q)
    c = _QTY_CLASS.get(q)
    if c is None:
        if len(_QTY_CLASS) > _CACHE_LIMIT:
            _QTY_CLASS.clear()
        c = _QTY_CLASS[q] = classify_qty(q)
    return c


def price_key(p: Any) -> Any:
    """Exact key of a price (float or Decimal), or None when not a positive finite decimal."""
    if type(p) is not str:
        k = order_key(p)
        return k if k is not None and k > 0 else None
    k = _PRICE_KEY.get(p, _MISSING)
    if k is _MISSING:
        if len(_PRICE_KEY) > _CACHE_LIMIT:
            _PRICE_KEY.clear()
        k = order_key(p)
        if k is not None and k <= 0:
            k = None
        _PRICE_KEY[p] = k
    return k


def _exact_price(p: Any) -> Decimal | None:
    d = exact_decimal(p)
    return d if d is not None and d > 0 else None


class _NeedsExact(Exception):
    """A price that a float key cannot hold exactly: the side switches to Decimal keys."""


def py_apply_levels(
    d: dict[Any, Any], text_of: dict[Any, Any], heap: list[Any], bid: bool, levels: Iterable[Any]
) -> list[Any] | None:
    """Apply ``[price, qty]`` levels to a side with float keys (its levels, its key -> text
    map, its heap); return the invalid ones, or None.  Raises :class:`_NeedsExact` for a
    price a float cannot hold, TypeError/ValueError for odd shapes (the caller applies the
    whole list again on its checking path).  The hot loop of the whole engine: everything it
    needs is a local.  The reference of the compiled ``shared._book_c.apply_levels``."""
    qclass = _QTY_CLASS
    pget = _PRICE_KEY.get
    missing = _MISSING
    positive = POSITIVE
    zero = ZERO
    bad: list[Any] | None = None
    for p, q in levels:
        try:
            c = qclass[q]
        except KeyError:
            c = _qty_class(q)
        if c is positive:
            if p in d:
                d[p] = q
                continue
            # A price text the book does not hold: validate it, catch an alias.
            k = pget(p, missing)
            if k is missing:
                k = price_key(p)
            if k is None:
                if bad is None:
                    bad = []
                bad.append([p, q])
                continue
            if type(k) is not float:
                raise _NeedsExact
            other = text_of.get(k)
            if other is None:
                d[p] = q
                text_of[k] = p
                heappush(heap, -k if bid else k)
            elif other in d:
                d[other] = q  # the same price written another way
            else:
                d[p] = q  # back after a delete: its heap entry is still there
                text_of[k] = p
        elif c is zero:
            if d.pop(p, missing) is missing:
                # Deleting a level the book does not hold (common: outside its depth).
                k = pget(p, missing)
                if k is missing:
                    k = price_key(p)
                if k is None:
                    if bad is None:
                        bad = []
                    bad.append([p, q])
                    continue
                if type(k) is not float:
                    raise _NeedsExact
                other = text_of.get(k)
                if other is not None and other != p:
                    d.pop(other, None)
        else:
            if bad is None:
                bad = []
            bad.append([p, q])
    return bad


class Side:
    """One side of a book. ``bid`` sides keep negated keys in their heap.

    Invariant: every key in ``_text_of`` has exactly one heap entry, so a price that comes
    back after a delete needs no new entry while its old one is still in the heap.
    """

    __slots__ = ("_heap", "_text_of", "bid", "exact", "levels")

    def __init__(self, bid: bool) -> None:
        self.bid = bid
        self.exact = False
        self.levels: dict[Any, Any] = {}
        self._heap: list[Any] = []
        self._text_of: dict[Any, Any] = {}

    def __len__(self) -> int:
        return len(self.levels)

    def _key_of_entry(self, v: Any) -> Any:
        if not self.bid:
            return v
        return v.copy_negate() if self.exact else -v

    def _entry_of_key(self, k: Any) -> Any:
        if not self.bid:
            return k
        return k.copy_negate() if self.exact else -k

    # -- updates ---------------------------------------------------------------------

    def apply(self, levels: Iterable[Any]) -> list[Any] | None:
        """Apply ``[price, qty]`` levels; return the invalid ones (not applied), or None.

        Replaying levels is idempotent, so when the fast path gives up part-way the whole
        list is applied again by a slower, checking path.
        """
        if self.exact:
            return self._apply_checked(levels)
        try:
            return self._apply_fast(levels)
        except _NeedsExact:
            self._to_exact()
            return self._apply_checked(levels)
        except (TypeError, ValueError):
            return self._apply_checked(levels)

    def _apply_fast(self, levels: Iterable[Any]) -> list[Any] | None:
        bad = apply_levels(self.levels, self._text_of, self._heap, self.bid, levels)
        self.compact_if_sparse()
        return bad

    def compact_if_sparse(self) -> None:
        """Compact when most key texts and heap entries belong to levels that are gone."""
        if len(self._text_of) > 4 * len(self.levels) + 1024:
            self._compact()

    def _apply_checked(self, levels: Iterable[Any]) -> list[Any] | None:
        """Level by level, checking shapes; used for odd input and for Decimal keys."""
        bad: list[Any] = []
        try:
            items = list(levels)
        except TypeError:
            return [levels]
        for level in items:
            if not isinstance(level, (list, tuple)) or len(level) < 2:
                bad.append(level)
                continue
            p, q = level[0], level[1]
            try:
                hash(p)
            except TypeError:
                bad.append(level)
                continue
            if not self.exact:
                try:
                    got = self._apply_fast([(p, q)])
                except _NeedsExact:
                    self._to_exact()
                else:
                    if got:
                        bad.extend(got)
                    continue
            if not self._apply_exact_level(p, q):
                bad.append([p, q])
        return bad or None

    def _apply_exact_level(self, p: Any, q: Any) -> bool:
        """One level with Decimal keys; False when it is invalid (not applied)."""
        c = _qty_class(q)
        if c == INVALID:
            return False
        d = self.levels
        if c == POSITIVE and p in d:
            d[p] = q
            return True
        k = _exact_price(p)
        if k is None:
            return False
        text_of = self._text_of
        other = text_of.get(k)
        if c == ZERO:
            d.pop(p, None)
            if other is not None and other != p:
                d.pop(other, None)
            return True
        if other is None:
            d[p] = q
            text_of[k] = p
            heappush(self._heap, self._entry_of_key(k))
        elif other in d:
            d[other] = q
        else:
            d[p] = q
            text_of[k] = p
        return True

    def _to_exact(self) -> None:
        """Switch every key of the side to an exact Decimal."""
        self.exact = True
        text_of: dict[Any, Any] = {}
        for p in self.levels:
            k = _exact_price(p)
            if k is not None:
                text_of[k] = p
        self._text_of = text_of
        self._heap = [self._entry_of_key(k) for k in text_of]
        heapify(self._heap)

    def _compact(self) -> None:
        """Drop heap entries and key texts of levels that are gone."""
        d = self.levels
        text_of = {k: p for k, p in self._text_of.items() if p in d}
        self._text_of = text_of
        self._heap = [self._entry_of_key(k) for k in text_of]
        heapify(self._heap)

    def clear(self) -> None:
        self.levels = {}
        self._heap = []
        self._text_of = {}
        self.exact = False

    def replace(self, levels: Iterable[Any]) -> list[Any] | None:
        self.clear()
        return self.apply(levels)

    # -- reading ---------------------------------------------------------------------

    def best_key(self) -> Any:
        """Exact key of the best price, or None for an empty side."""
        h = self._heap
        text_of = self._text_of
        d = self.levels
        if self.bid:
            exact = self.exact
            while h:
                k = h[0].copy_negate() if exact else -h[0]
                if text_of[k] in d:
                    return k
                heappop(h)
                del text_of[k]
            return None
        while h:
            k = h[0]
            if text_of[k] in d:
                return k
            heappop(h)
            del text_of[k]
        return None

    def best(self) -> tuple[Any, Any] | None:
        k = self.best_key()
        if k is None:
            return None
        t = self._text_of[k]
        return t, self.levels[t]

    def top(self, n: int) -> list[tuple[Any, Any]]:
        """The best ``n`` levels, best first, as (price text, qty text)."""
        h = self._heap
        out: list[tuple[Any, Any]] = []
        if not h or n <= 0:
            return out
        d = self.levels
        text_of = self._text_of
        unkey = self._key_of_entry
        size = len(h)
        frontier: list[tuple[Any, int]] = [(h[0], 0)]
        while frontier and len(out) < n:
            v, i = heappop(frontier)
            t = text_of[unkey(v)]
            if t in d:
                out.append((t, d[t]))
            child = 2 * i + 1
            if child < size:
                heappush(frontier, (h[child], child))
                if child + 1 < size:
                    heappush(frontier, (h[child + 1], child + 1))
        return out

    def trim(self, depth: int) -> None:
        """Keep only the best ``depth`` levels (venues that stop sending levels out of scope)."""
        if len(self.levels) > depth:
            keep = self.top(depth)
            exact = self.exact
            self.clear()
            if exact:
                self._to_exact()
            self.apply([[p, q] for p, q in keep])

    def sorted_levels(self) -> list[tuple[Any, Any]]:
        return self.top(len(self.levels))


class Book:
    """Both sides of one instrument's book."""

    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids = Side(bid=True)
        self.asks = Side(bid=False)

    def reset(self, bids: Iterable[Any], asks: Iterable[Any]) -> list[Any]:
        bad = (self.bids.replace(bids) or []) + (self.asks.replace(asks) or [])
        return bad

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()

    def crossed(self) -> bool:
        b = self.bids.best_key()
        if b is None:
            return False
        a = self.asks.best_key()
        if a is None:
            return False
        if type(a) is type(b):
            return bool(b >= a)
        # One side holds Decimal keys, the other floats: compare the texts exactly.
        bb, ba = self.bids.best(), self.asks.best()
        assert bb is not None and ba is not None
        return bool(_exact_price(bb[0]) >= _exact_price(ba[0]))  # type: ignore[operator]

    def snapshot(self, depth: int) -> dict[str, list[list[str]]]:
        return {
            "bids": [[as_text(p), as_text(q)] for p, q in self.bids.top(depth)],
            "asks": [[as_text(p), as_text(q)] for p, q in self.asks.top(depth)],
        }


def differences(book: Book, bids: Any, asks: Any) -> list[dict[str, Any]]:
    """Levels where ``book`` disagrees with a snapshot, inside the price range the snapshot covers.

    A snapshot limited to N levels says nothing beyond its deepest level, so levels the
    book holds past that are not compared.  Malformed snapshot levels are skipped (the
    snapshot itself reports them when it is applied).  Comparison is by exact value.
    """
    out: list[dict[str, Any]] = []
    for name, side, snap in (("bid", book.bids, bids), ("ask", book.asks, asks)):
        want: dict[Decimal, tuple[Any, Any, Decimal]] = {}
        for level in snap if isinstance(snap, (list, tuple)) else ():
            if not isinstance(level, (list, tuple)) or len(level) < 2:
                continue
            k = _exact_price(level[0])
            qk = exact_decimal(level[1])
            if k is None or qk is None or qk <= 0:
                continue
            want[k] = (level[0], level[1], qk)
        have: dict[Decimal, tuple[Any, Any, Decimal | None]] = {}
        if want:
            edge = min(want) if side.bid else max(want)
            for p, q in side.levels.items():
                k = _exact_price(p)
                if k is None or (k < edge if side.bid else k > edge):
                    continue
                have[k] = (p, q, exact_decimal(q))
        for k in sorted(set(want) | set(have)):
            w = want.get(k)
            h = have.get(k)
            if w is not None and h is not None and w[2] == h[2]:
                continue
            out.append(
                {
                    "side": name,
                    "price": as_text((w or h)[0]),  # type: ignore[index]
                    "snapshot": None if w is None else as_text(w[1]),
                    "book": None if h is None else as_text(h[1]),
                }
            )
    return out


_COMPILED = compiled.load("shared._book_c")
apply_levels: Callable[..., list[Any] | None] = py_apply_levels
if _COMPILED is not None:
    _COMPILED.bind(_QTY_CLASS, _qty_class, _PRICE_KEY, price_key, _MISSING, POSITIVE, ZERO, _NeedsExact)
    apply_levels = _COMPILED.apply_levels

__all__ = ["INVALID", "POSITIVE", "ZERO", "Book", "Side", "differences", "price_key"]
