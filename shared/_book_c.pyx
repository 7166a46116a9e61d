# cython: language_level=3, boundscheck=False, wraparound=False
"""The book's hot loop (:func:`shared.book.py_apply_levels`), compiled: the same levels, the
same keys, the same invalid levels and the same exceptions, with fewer interpreter steps.
``book.py`` holds the reference in pure Python, binds its caches here and uses this one when
it was built and ``RETAPE_PURE_PYTHON`` is not set."""

from heapq import heappush

cdef dict _qclass = {}
cdef object _qty_class = None
cdef dict _price_keys = {}
cdef object _price_key = None
cdef object _missing = None
cdef object _positive = None
cdef object _zero = None
cdef object _needs_exact = None


def bind(dict qclass, qty_class, dict price_keys, price_key, missing, positive, zero, needs_exact):
    """Share ``shared.book``'s caches, sentinels and exception (one state for both paths)."""
    global _qclass, _qty_class, _price_keys, _price_key, _missing, _positive, _zero, _needs_exact
    _qclass = qclass
    _qty_class = qty_class
    _price_keys = price_keys
    _price_key = price_key
    _missing = missing
    _positive = positive
    _zero = zero
    _needs_exact = needs_exact


def apply_levels(dict d, dict text_of, list heap, bint bid, levels):
    cdef object bad = None
    cdef object p, q, c, k, other
    cdef dict qclass = _qclass
    cdef dict pkeys = _price_keys
    cdef object missing = _missing
    cdef object positive = _positive
    cdef object zero = _zero
    for p, q in levels:
        try:
            c = qclass[q]
        except KeyError:
            c = _qty_class(q)
        if c is positive:
            if p in d:
                d[p] = q
                continue
            k = pkeys.get(p, missing)
            if k is missing:
                k = _price_key(p)
            if k is None:
                if bad is None:
                    bad = []
                bad.append([p, q])
                continue
            if type(k) is not float:
                raise _needs_exact
            other = text_of.get(k)
            if other is None:
                d[p] = q
                text_of[k] = p
                heappush(heap, -k if bid else k)
            elif other in d:
                d[other] = q
            else:
                d[p] = q
                text_of[k] = p
        elif c is zero:
            if d.pop(p, missing) is missing:
                k = pkeys.get(p, missing)
                if k is missing:
                    k = _price_key(p)
                if k is None:
                    if bad is None:
                        bad = []
                    bad.append([p, q])
                    continue
                if type(k) is not float:
                    raise _needs_exact
                other = text_of.get(k)
                if other is not None and other != p:
                    d.pop(other, None)
        else:
            if bad is None:
                bad = []
            bad.append([p, q])
    return bad
