# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The fast lane: runs of ordinary depth lines through one compiled loop.

:mod:`shared.fastlane` binds a :class:`Lane` to one live book stream after the Python path
(the reference) has read a line of it; the lane then takes the lines that follow as long as
each is exactly what the Python path would have done nothing special with: the same JSON
shape (keys, value types, list shapes, compact, ASCII, no escapes), the same event kind
and symbol, a diff that follows the last one applied, a clock that does not drift, and
levels whose prices and quantities the book's caches hold as valid, float-exact keys.
Such a line is applied here exactly as ``BookAuditor`` would: the same dicts, heap and
caches (``shared.book``), the same timing windows (``shared.checks.timing``), the same
counters, and a crossed-book finding through the auditor's own ``_find``.  Any other line
is left untouched for the Python path: the lane checks everything before it changes
anything.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF, Py_XDECREF
from libc.stdlib cimport calloc, free, malloc, qsort, realloc
from libc.string cimport memchr, memcmp, memcpy
from heapq import heappush

cdef extern from "Python.h":
    object PyUnicode_FromStringAndSize(const char *u, Py_ssize_t size)

cdef enum:
    T_STR = 1
    T_INT = 2
    T_OBJ = 3
    T_END = 4
    T_LEVELS = 5
    T_EMPTY = 6
    MAXF = 40
    MAXL = 4096
    TIME_EPOCH = 1
    TIME_ISO = 2
    RULE_CONSECUTIVE = 1
    RULE_PREV_LINK = 2
    WINDOW_MAX = 33
    SEEN_MAX = 128  # > BookAuditor.recent_us's length
    HIST_SLOTS = 256


cdef struct HistSlot:
    long long bucket
    long long count


cdef long long RANGE = 4611686018427387904  # 2**62: shared.checks.timing._RANGE
cdef long long RATE_US = 100000  # shared.checks.timing.RATE_THRESHOLD_US
cdef int WINDOW = 33  # shared.checks.timing.WINDOW (WINDOW_MAX)
cdef int MIN_SAMPLES = 8
cdef long long BUCKET_US = 10


cdef inline long long floordiv(long long a, long long b):
    cdef long long q = a / b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef struct Field:
    int depth
    int type
    const char *key
    int klen
    const char *val
    int vlen
    long long ival
    int list_no


cdef class Scan:
    """One line's JSON object, flattened: its fields in order (one level of nesting) and the
    spans of up to two lists of ``[price, qty]`` string pairs."""

    cdef Field f[MAXF]
    cdef int nf
    cdef int nlists
    cdef const char *lp[2][MAXL]
    cdef int lpl[2][MAXL]
    cdef const char *lq[2][MAXL]
    cdef int lql[2][MAXL]
    cdef int nlev[2]

    cdef const char *string(self, const char *p, const char *end) noexcept:
        # p at the opening quote; the position after the closing one, or NULL.
        cdef unsigned char c
        p += 1
        while p < end:
            c = <unsigned char>p[0]
            if c == 34:  # "
                return p + 1
            if c == 92 or c < 32 or c > 126:  # backslash, control, not ASCII
                return NULL
            p += 1
        return NULL

    cdef const char *integer(self, const char *p, const char *end, long long *out) noexcept:
        cdef long long v = 0
        cdef int digits = 0
        cdef const char *start = p
        while p < end and 48 <= (<unsigned char>p[0]) <= 57:
            v = v * 10 + (p[0] - 48)
            digits += 1
            p += 1
            if digits > 18:
                return NULL
        if digits == 0 or (digits > 1 and start[0] == 48):
            return NULL
        if p < end and (p[0] == 46 or p[0] == 101 or p[0] == 69):  # . e E: not an integer
            return NULL
        out[0] = v
        return p

    cdef const char *levels(self, const char *p, const char *end, int no) noexcept:
        # p at '[' of a non-empty list of levels.
        cdef int n = 0
        cdef const char *s
        p += 1
        while True:
            if p >= end or p[0] != 91 or n >= MAXL:  # [
                return NULL
            s = p + 1
            if s >= end or s[0] != 34:
                return NULL
            p = self.string(s, end)
            if p == NULL or p >= end or p[0] != 44:  # ,
                return NULL
            self.lp[no][n] = s + 1
            self.lpl[no][n] = <int>(p - s - 2)
            s = p + 1
            if s >= end or s[0] != 34:
                return NULL
            p = self.string(s, end)
            if p == NULL or p >= end or p[0] != 93:  # ]
                return NULL
            self.lq[no][n] = s + 1
            self.lql[no][n] = <int>(p - s - 2)
            n += 1
            p += 1
            if p >= end:
                return NULL
            if p[0] == 93:
                self.nlev[no] = n
                return p + 1
            if p[0] != 44:
                return NULL
            p += 1

    cdef const char *obj(self, const char *p, const char *end, int depth) noexcept:
        # p at '{'.  Fields are appended to self.f.
        cdef const char *k
        cdef Field *fd
        cdef unsigned char c
        p += 1
        if p >= end or p[0] == 125:  # an empty object: not for the lane
            return NULL
        while True:
            if p >= end or p[0] != 34 or self.nf >= MAXF - 1:
                return NULL
            k = p
            p = self.string(p, end)
            if p == NULL or p >= end or p[0] != 58:  # :
                return NULL
            fd = &self.f[self.nf]
            self.nf += 1
            fd.depth = depth
            fd.key = k + 1
            fd.klen = <int>(p - k - 2)
            fd.list_no = -1
            p += 1
            if p >= end:
                return NULL
            c = <unsigned char>p[0]
            if c == 34:
                fd.type = T_STR
                fd.val = p + 1
                p = self.string(p, end)
                if p == NULL:
                    return NULL
                fd.vlen = <int>(p - fd.val - 1)
            elif 48 <= c <= 57:
                fd.type = T_INT
                p = self.integer(p, end, &fd.ival)
                if p == NULL:
                    return NULL
            elif c == 91:
                # A list of levels (possibly empty): at most two per message.
                if self.nlists >= 2:
                    return NULL
                fd.type = T_LEVELS
                fd.list_no = self.nlists
                if p + 1 < end and p[1] == 93:
                    self.nlev[self.nlists] = 0
                    p += 2
                else:
                    p = self.levels(p, end, self.nlists)
                    if p == NULL:
                        return NULL
                self.nlists += 1
            elif c == 123 and depth == 0:
                fd.type = T_OBJ
                p = self.obj(p, end, 1)
                if p == NULL or self.nf >= MAXF:
                    return NULL
                fd = &self.f[self.nf]
                self.nf += 1
                fd.depth = 1
                fd.type = T_END
                fd.klen = 0
                fd.list_no = -1
            else:
                return NULL
            if p >= end:
                return NULL
            if p[0] == 125:  # }
                return p + 1
            if p[0] != 44:
                return NULL
            p += 1

    cdef bint scan(self, const char *p, const char *end) noexcept:
        """The whole of [p, end) is one JSON object the lane reads."""
        self.nf = 0
        self.nlists = 0
        self.nlev[0] = 0
        self.nlev[1] = 0
        if p >= end or p[0] != 123:
            return False
        p = self.obj(p, end, 0)
        return p == end

    def signature(self, bytes text):
        """The shape of ``text`` as the lane sees it: [(depth, key, type)] per field, or None
        when the lane cannot read it."""
        cdef const char *p = PyBytes_AS_STRING(text)
        cdef int i
        if not self.scan(p, p + PyBytes_GET_SIZE(text)):
            return None
        out = []
        for i in range(self.nf):
            t = self.f[i].type
            if t == T_LEVELS and self.nlev[self.f[i].list_no] == 0:
                t = T_EMPTY
            out.append((self.f[i].depth, self.f[i].key[:self.f[i].klen] if self.f[i].klen else b"", t))
        return out

    cdef int mask(self) noexcept:
        """Which lists of levels are not empty (bit 0: the first, bit 1: the second)."""
        return (self.nlev[0] > 0) | ((self.nlev[1] > 0) << 1)



# -- the lane's own book -------------------------------------------------------------------
#
# While the lane runs, a stream's book lives here: prices as integers scaled by 10**SCALE
# (plain decimal texts of at most 16 characters, at most 8 digits before the point and
# SCALE after it), each level keeping its exchange texts.  The Python book
# (``shared.book.Side``) is brought up to date from the levels changed ("dirty") before the
# Python path reads any line, and read back whole when the Python path changed it.
#
# A speculative run (a chunk of a recording audited before the book at its start is known)
# starts from an empty table that stands for "whatever the book held": a level not in it is
# the unknown book's; a level it holds is known (present, or deleted).  What the run did to
# the book is then an overlay that the assembly lays on the book once it is known.

cdef enum:
    SCALE = 10
    LVL_TEXT = 16
    ABSENT = 0
    PRESENT = 1
    DELETED = 2

cdef long long NONE = -9223372036854775807LL - 1  # no level (LLONG_MIN)
cdef long long POW10[19]
POW10[0] = 1
for _i in range(1, 19):
    POW10[_i] = POW10[_i - 1] * 10


cdef struct Lvl:
    long long price
    long long first  # the message (counted from the run's start) that first touched it
    unsigned char state  # ABSENT (a free slot), PRESENT, DELETED (a tombstone)
    unsigned char dirty
    # The level was inserted while its slot was ABSENT: where the book it lays on holds the
    # price (written another way), that text stays and this one is not used.
    unsigned char inherit
    # Deleted and inserted again with another text in one run (a speculative run gives up
    # a crossed finding that would need the text it had before).
    unsigned char retexted
    unsigned char plen
    unsigned char qlen
    char ptext[LVL_TEXT]
    char qtext[LVL_TEXT]


cdef inline bint scaled_price(const char *b, int n, long long *out) noexcept:
    """A price text as an integer of 10**-SCALE units, or False: digits, at most one point, at
    most 8 digits before it and SCALE after, at most 15 digits in all, not zero.  Such a text
    is a valid price with a float key for ``shared.book.price_key`` (a plain decimal of at
    most 15 significant digits), and two such texts are one price exactly when their
    integers are equal."""
    cdef long long whole = 0, frac = 0
    cdef int i = 0, wd = 0, fd = 0, digits = 0
    cdef bint point = False
    cdef char c
    if n == 0 or n > LVL_TEXT or b[0] == 46:
        return False
    for i in range(n):
        c = b[i]
        if c == 46:
            if point:
                return False
            point = True
        elif 48 <= c <= 57:
            if point:
                fd += 1
                if fd > SCALE:
                    return False
                frac = frac * 10 + (c - 48)
            else:
                wd += 1
                if wd > 8:
                    return False
                whole = whole * 10 + (c - 48)
            digits += 1
        else:
            return False
    if digits > 15:
        return False
    out[0] = whole * POW10[SCALE] + frac * POW10[SCALE - fd]
    return out[0] > 0


cdef int plain_class(const char *b, int n) noexcept:
    """The class ``shared.numbers.classify_qty`` gives a short plain decimal (digits, at most
    one point, at most 15 digits: an exact float below 1e30): 1 positive, 2 zero; 0 for any
    other text (not for the lane)."""
    cdef int i, digits = 0, points = 0
    cdef bint nonzero = False
    cdef char c
    if n == 0 or n > LVL_TEXT or b[0] == 46:
        return 0
    for i in range(n):
        c = b[i]
        if c == 46:
            points += 1
            if points > 1:
                return 0
        elif 48 <= c <= 57:
            digits += 1
            if c != 48:
                nonzero = True
        else:
            return 0
    if digits > 15:
        return 0
    return 1 if nonzero else 2


cdef class CSide:
    """One side of the lane's book: an open-addressing table of levels by scaled price, a
    lazy heap of prices (best first), and the prices changed since the Python side was last
    brought up to date."""

    cdef Lvl *table
    cdef long long cap  # a power of two
    cdef long long used  # slots not ABSENT
    cdef long long live  # PRESENT levels
    cdef long long *heap
    cdef long long nheap, capheap
    cdef long long *dirty
    cdef long long ndirty, capdirty
    cdef bint bid

    def __cinit__(self, bint bid):
        self.bid = bid
        self.cap = 0
        self.table = NULL
        self.heap = NULL
        self.dirty = NULL
        self.reset(1024)

    def __dealloc__(self):
        free(self.table)
        free(self.heap)
        free(self.dirty)

    cdef int reset(self, long long cap) except -1:
        free(self.table)
        free(self.heap)
        free(self.dirty)
        self.table = NULL
        self.heap = NULL
        self.dirty = NULL
        self.cap = cap
        self.table = <Lvl *>calloc(cap, sizeof(Lvl))
        self.capheap = 1024
        self.heap = <long long *>malloc(self.capheap * sizeof(long long))
        self.capdirty = 1024
        self.dirty = <long long *>malloc(self.capdirty * sizeof(long long))
        if self.table == NULL or self.heap == NULL or self.dirty == NULL:
            raise MemoryError()
        self.used = self.live = self.nheap = self.ndirty = 0
        return 0

    cdef inline Lvl *slot(self, long long price) noexcept:
        """The slot holding ``price``, or the free slot where it would go."""
        cdef unsigned long long h = <unsigned long long>price * 0x9E3779B97F4A7C15ULL
        cdef long long mask = self.cap - 1
        cdef long long i = <long long>(h >> 20) & mask
        cdef Lvl *e
        while True:
            e = &self.table[i]
            if e.state == ABSENT or e.price == price:
                return e
            i = (i + 1) & mask

    cdef int grow(self, bint keep_deleted) except -1:
        """More room (or the same, without the tombstones nobody needs)."""
        cdef Lvl *old = self.table
        cdef long long oldcap = self.cap, i
        cdef long long cap = self.cap
        cdef Lvl *e
        if self.live * 4 > cap or keep_deleted:
            cap *= 2
        self.table = <Lvl *>calloc(cap, sizeof(Lvl))
        if self.table == NULL:
            self.table = old
            raise MemoryError()
        self.cap = cap
        self.used = 0
        for i in range(oldcap):
            if old[i].state == PRESENT or (old[i].state == DELETED and (old[i].dirty or keep_deleted)):
                e = self.slot(old[i].price)
                e[0] = old[i]
                self.used += 1
        free(old)
        return 0

    cdef int push(self, long long price) except -1:
        cdef long long i, parent, v
        if self.nheap == self.capheap:
            self.capheap *= 2
            self.heap = <long long *>realloc(self.heap, self.capheap * sizeof(long long))
            if self.heap == NULL:
                raise MemoryError()
        v = -price if self.bid else price
        i = self.nheap
        self.nheap += 1
        while i > 0:
            parent = (i - 1) >> 1
            if self.heap[parent] <= v:
                break
            self.heap[i] = self.heap[parent]
            i = parent
        self.heap[i] = v
        return 0

    cdef void pop(self) noexcept:
        self.nheap = heap_pop(self.heap, self.nheap)

    cdef Lvl *best(self) noexcept:
        """The best present level, or NULL for an empty side (stale heap entries dropped)."""
        cdef Lvl *e
        cdef long long price
        while self.nheap:
            price = -self.heap[0] if self.bid else self.heap[0]
            e = self.slot(price)
            if e.state == PRESENT:
                return e
            self.pop()
        return NULL

    cdef list top(self, int depth):
        """The best ``depth`` present levels, best first: (price, price text, quantity text,
        inherit)."""
        cdef long long n = self.nheap, v, price
        cdef long long *h = <long long *>malloc((n + 1) * sizeof(long long))
        cdef Lvl *e
        if h == NULL:
            raise MemoryError()
        memcpy(h, self.heap, n * sizeof(long long))
        out = []
        seen = set()
        try:
            while n and len(out) < depth:
                v = h[0]
                n = heap_pop(h, n)
                price = -v if self.bid else v
                e = self.slot(price)
                if e.state == PRESENT and price not in seen:
                    seen.add(price)
                    out.append((price, e.ptext[:e.plen].decode("ascii"), e.qtext[:e.qlen].decode("ascii"),
                                e.inherit))
        finally:
            free(h)
        return out

    cdef int mark(self, Lvl *e) except -1:
        if e.dirty:
            return 0
        e.dirty = 1
        if self.ndirty == self.capdirty:
            self.capdirty *= 2
            self.dirty = <long long *>realloc(self.dirty, self.capdirty * sizeof(long long))
            if self.dirty == NULL:
                raise MemoryError()
        self.dirty[self.ndirty] = e.price
        self.ndirty += 1
        return 0

    cdef int apply(self, long long price, const char *p, int plen, const char *q, int qlen,
                   bint zero, long long t, bint speculative) except -1:
        """One level, as ``shared.book.py_apply_levels`` applies it: a price written another
        way is the same level and keeps the text it has."""
        cdef Lvl *e = self.slot(price)
        if e.state == ABSENT:
            e.price = price
            e.first = t
            e.dirty = 0
            e.retexted = 0
            e.plen = 0
            if zero and not speculative:
                return 0  # deleting a level the book does not hold
            self.used += 1
            if zero:
                e.state = DELETED  # known to be gone from here on
                memcpy(e.ptext, p, plen)
                e.plen = plen
                self.mark(e)
                self.check_room(True)
                return 0
            e.inherit = 1
        elif zero:
            if e.state == PRESENT:
                e.state = DELETED
                self.live -= 1
                self.mark(e)
            return 0
        elif e.state == PRESENT:
            memcpy(e.qtext, q, qlen)
            e.qlen = qlen
            self.mark(e)
            return 0
        else:  # DELETED: back with the text it comes with
            if e.plen and (e.plen != plen or memcmp(e.ptext, p, plen) != 0):
                e.retexted = 1
            e.inherit = 0
        e.state = PRESENT
        memcpy(e.ptext, p, plen)
        e.plen = plen
        memcpy(e.qtext, q, qlen)
        e.qlen = qlen
        self.live += 1
        self.push(price)
        self.mark(e)
        self.check_room(speculative)
        if self.nheap > 4 * self.live + 1024:
            self.rebuild_heap()
        return 0

    cdef int check_room(self, bint keep_deleted) except -1:
        if self.used * 2 > self.cap:
            self.grow(keep_deleted)
        return 0

    cdef int rebuild_heap(self) except -1:
        cdef long long i
        self.nheap = 0
        for i in range(self.cap):
            if self.table[i].state == PRESENT:
                self.push(self.table[i].price)
        return 0

    cdef bint load(self, object side) except -1:
        """Read the Python side whole; False when one of its levels is not for the lane."""
        cdef dict d = side.levels
        cdef long long cap = 1024, price
        cdef bytes pb, qb
        cdef Lvl *e
        while cap < 4 * len(d) + 16:
            cap *= 2
        self.reset(cap)
        for p, q in d.items():
            if type(p) is not str or type(q) is not str or not (<str>p).isascii() or not (<str>q).isascii():
                return False
            pb = (<str>p).encode("ascii")
            qb = (<str>q).encode("ascii")
            if len(qb) > LVL_TEXT or not scaled_price(pb, len(pb), &price):
                return False
            e = self.slot(price)
            if e.state == PRESENT:
                return False  # two texts of one price (cannot be, but not for the lane)
            e.price = price
            e.state = PRESENT
            e.dirty = 0
            e.inherit = 0
            e.retexted = 0
            e.first = -1
            memcpy(e.ptext, <const char *>pb, len(pb))
            e.plen = len(pb)
            memcpy(e.qtext, <const char *>qb, len(qb))
            e.qlen = len(qb)
            self.used += 1
            self.live += 1
            self.push(price)
        return True

    cdef int flush(self, object side, dict pkeys, object price_key, object missing) except -1:
        """Lay the levels changed here on the Python side (see :func:`lay_level`)."""
        cdef long long i
        cdef Lvl *e
        if not self.ndirty:
            return 0
        for i in range(self.ndirty):
            e = self.slot(self.dirty[i])
            e.dirty = 0
            lay_level(side, e, pkeys, price_key, missing, self.bid)
        self.ndirty = 0
        side.compact_if_sparse()
        return 0

    def overlay(self):
        """The levels a speculative run touched, packed (``Lvl`` records, in table order)."""
        cdef long long i, n = 0
        cdef Lvl *e
        for i in range(self.cap):
            if self.table[i].state != ABSENT:
                n += 1
        out = bytearray(n * sizeof(Lvl))
        cdef char *o = out
        n = 0
        for i in range(self.cap):
            e = &self.table[i]
            if e.state != ABSENT:
                memcpy(o + n * sizeof(Lvl), e, sizeof(Lvl))
                n += 1
        return bytes(out)

    cdef int take(self, bytes packed) except -1:
        """Hold the levels of ``packed`` (``overlay``'s), for look-ups."""
        cdef const char *p = PyBytes_AS_STRING(packed)
        cdef long long n = PyBytes_GET_SIZE(packed) // sizeof(Lvl), i, cap = 1024
        cdef Lvl *e
        while cap < 4 * n + 16:
            cap *= 2
        self.reset(cap)
        for i in range(n):
            e = self.slot((<Lvl *>(p + i * sizeof(Lvl))).price)
            memcpy(e, p + i * sizeof(Lvl), sizeof(Lvl))
            self.used += 1
        return 0


cdef long long heap_pop(long long *heap, long long n) noexcept:
    """Pop the least of a heap of ``n`` values; its new size."""
    cdef long long i = 0, c, v
    n -= 1
    if n == 0:
        return 0
    v = heap[n]
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and heap[c + 1] < heap[c]:
            c += 1
        if v <= heap[c]:
            break
        heap[i] = heap[c]
        i = c
    heap[i] = v
    return n


cdef int lay_level(object side, Lvl *e, dict pkeys, object price_key, object missing, bint bid) except -1:
    """Bring one price of the Python side to the state of ``e``, as the Python book would be
    after the same levels one by one: a present level keeps the text the side holds for its
    price unless it was deleted and inserted again; a deleted one is gone."""
    cdef dict d = side.levels
    cdef dict text_of = side._text_of
    p = PyUnicode_FromStringAndSize(e.ptext, e.plen)
    # The key shared.book.price_key gives such a text (a plain decimal of at most 15 digits).
    k = float(p)
    other = text_of.get(k)
    if e.state == PRESENT:
        q = PyUnicode_FromStringAndSize(e.qtext, e.qlen)
        if other is not None and other in d:
            if e.inherit or other == p:
                d[other] = q  # the same price written another way (or the same way)
                return 0
            del d[other]  # deleted, then back with another text
        d[p] = q
        if other is None:
            heappush(side._heap, -k if bid else k)
        text_of[k] = p
    elif other is not None:
        d.pop(other, None)
    return 0


def lay_overlay(object side, bytes packed, dict pkeys, object price_key, object missing):
    """Lay a speculative run's overlay (``CSide.overlay``) on a Python side."""
    cdef const char *p = PyBytes_AS_STRING(packed)
    cdef long long n = PyBytes_GET_SIZE(packed) // sizeof(Lvl), i
    cdef Lvl e
    cdef bint bid = side.bid
    for i in range(n):
        memcpy(&e, p + i * sizeof(Lvl), sizeof(Lvl))
        lay_level(side, &e, pkeys, price_key, missing, bid)
    side.compact_if_sparse()


cdef enum:
    # An overlay on the wire: per level its price (8 bytes), the message that first touched
    # it (8), its state, inherit and retexted flags and text lengths (5), then its texts.
    WIRE_HEAD = 21


def pack_overlay(bytes fixed):
    """``CSide.overlay``'s records as they travel: the texts without their padding."""
    cdef const char *p = PyBytes_AS_STRING(fixed)
    cdef long long n = PyBytes_GET_SIZE(fixed) // sizeof(Lvl), i, o = 0
    cdef const Lvl *e
    out = bytearray(n * (WIRE_HEAD + 2 * LVL_TEXT))
    cdef char *w = out
    for i in range(n):
        e = <const Lvl *>(p + i * sizeof(Lvl))
        memcpy(w + o, &e.price, 8)
        memcpy(w + o + 8, &e.first, 8)
        w[o + 16] = <char>e.state
        w[o + 17] = <char>e.inherit
        w[o + 18] = <char>e.retexted
        w[o + 19] = <char>e.plen
        w[o + 20] = <char>e.qlen
        memcpy(w + o + WIRE_HEAD, e.ptext, e.plen)
        memcpy(w + o + WIRE_HEAD + e.plen, e.qtext, e.qlen)
        o += WIRE_HEAD + e.plen + e.qlen
    return bytes(out[:o])


def unpack_overlay(bytes packed):
    """The records :func:`pack_overlay` packed, as ``CSide.overlay`` gave them (not dirty)."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(packed)
    cdef long long size = PyBytes_GET_SIZE(packed), o = 0, n = 0, i
    cdef Lvl *e
    while o + WIRE_HEAD <= size:
        o += WIRE_HEAD + p[o + 19] + p[o + 20]
        n += 1
    if o != size:
        raise ValueError("not a packed overlay")
    out = bytearray(n * sizeof(Lvl))
    cdef char *w = out
    o = 0
    for i in range(n):
        e = <Lvl *>(w + i * sizeof(Lvl))
        memcpy(&e.price, p + o, 8)
        memcpy(&e.first, p + o + 8, 8)
        e.state = p[o + 16]
        e.inherit = p[o + 17]
        e.retexted = p[o + 18]
        e.plen = p[o + 19]
        e.qlen = p[o + 20]
        if e.plen > LVL_TEXT or e.qlen > LVL_TEXT:
            raise ValueError("not a packed overlay")
        memcpy(e.ptext, p + o + WIRE_HEAD, e.plen)
        memcpy(e.qtext, p + o + WIRE_HEAD + e.plen, e.qlen)
        o += WIRE_HEAD + e.plen + e.qlen
    return bytes(out)


cdef class Composed:
    """The overlays of speculative runs laid one after the other, as one: on any side, laying
    :meth:`overlay` (:func:`lay_overlay`) leaves the levels that laying each in turn would."""

    cdef CSide acc

    def __cinit__(self):
        self.acc = CSide(True)

    def add(self, bytes then):
        """One more run's overlay, laid after the ones added before."""
        cdef const char *p = PyBytes_AS_STRING(then)
        cdef long long n = PyBytes_GET_SIZE(then) // sizeof(Lvl), i
        cdef CSide acc = self.acc
        cdef const Lvl *x
        cdef Lvl *e
        for i in range(n):
            if (acc.used + 1) * 2 > acc.cap:
                acc.grow(True)
            x = <const Lvl *>(p + i * sizeof(Lvl))
            e = acc.slot(x.price)
            if e.state == ABSENT:
                memcpy(e, x, sizeof(Lvl))
                acc.used += 1
            elif x.state == PRESENT and x.inherit and e.state == PRESENT:
                # An update of a level the runs before left: the text they left stays.
                memcpy(e.qtext, x.qtext, x.qlen)
                e.qlen = x.qlen
            else:
                # Deleted, written with its own text, or back after a run before deleted it
                # (then its own text too: the side no longer holds another).
                memcpy(e, x, sizeof(Lvl))
                if e.state == PRESENT:
                    e.inherit = 0

    def overlay(self):
        return self.acc.overlay()


# -- the lane ------------------------------------------------------------------------------

cdef struct Clock:
    # shared.checks.timing.Timing, for the run: its window in arrival order (a ring) and sorted.
    bint has_last_exch
    long long last_exch
    long long win[WINDOW_MAX + 1]
    long long srt[WINDOW_MAX + 1]
    int nwin
    int head
    long long lat_count
    bint has_max
    long long max_us
    long long compared
    long long over
    long long threshold


cdef class Lane:
    """A shape of depth line, bound to one stream, and the state it carries between the runs
    of lines it takes.  Bound to an auditor (``shared.fastlane``), it reads the auditor's state
    when a run starts and writes it back when it ends.  Speculative (:meth:`speculate`), it
    runs from a state it is given, on a book it does not know, and records what the
    assembly needs (``shared.chunking``)."""

    # The binding (set by shared.fastlane).
    cdef Scan sc
    cdef public object auditor
    cdef public object summary
    cdef public object price_keys
    cdef public object price_key
    cdef public object missing
    cdef public object crossed_fault
    cdef public object drift_fault
    cdef public bint bound
    cdef public object path
    cdef Field sig[MAXF]
    cdef int nsig
    cdef bytes sig_keys  # keeps the signature's key bytes alive
    cdef int i_kind, i_sym, i_exch, i_first, i_last, i_prev, bids_list, asks_list, i_const
    cdef bytes kind_val, sym_val, const_val
    cdef long long exch_max  # an exchange time from here up is not one for the venue: Python's
    cdef bint reset_one  # an id of 1 is a reset (Bybit): Python's
    # Which emptiness of the lists of levels is past its shape warm-up (by Scan.mask).
    cdef bint allowed[4]
    # The shape watch of the file's venue, the bound shape with its level lists empty or not
    # (by mask) and their fingerprints: a line of a shape still in its warm-up is checked by
    # the watch here, as the Python path would.
    cdef public object watch
    cdef public list variants
    cdef public list variant_fps
    cdef public int warm_up
    cdef public object format_change
    cdef public int time_format
    cdef public int rule
    cdef long long exch_mult
    # Cached ISO-8601 second (tardis-raw): the 19 bytes and their epoch seconds.
    cdef char iso_head[19]
    cdef long long iso_seconds
    cdef bint iso_known
    cdef public object iso_seconds_of
    # Lines taken by the lane, in all.
    cdef public long long taken
    cdef HistSlot hist[HIST_SLOTS]
    cdef object hist_dict  # the latency histogram the slots are added to
    # The lane's book of the bound stream, and the auditor's message count when it was last
    # the same as the Python book (another count: the Python path changed the book).
    cdef CSide cbids, casks
    cdef public long long synced
    cdef public bint loaded
    # One line's levels, checked before any is applied.
    cdef long long lprice[2][MAXL]
    cdef char lzero[2][MAXL]
    # A speculative run: its clock, sequence, counters and records.
    cdef public bint speculative
    cdef Clock sclock
    cdef public object start_prev  # the id the first line took as the one before it
    cdef long long seq_last
    cdef bint has_seq
    cdef public long long messages
    cdef public object first_us, last_us, max_local
    cdef public list drifts  # (message, local, detail) of the drift findings, in order
    cdef public object locals_  # array('q'): the receive time of every message taken
    cdef public object best  # array('q'): (message, best bid, best ask) where they changed
    cdef long long last_ob, last_oa
    cdef public list kept  # (start, end, line) of the lines taken while the auditor keeps them
    cdef public list rows  # (message, local, exch, best bids, best asks) where a book was due
    cdef public list shapes  # (message, mask) of the first messages of each shape
    cdef int mask_count[4]
    cdef public long long start_next_emit, next_emit

    def __cinit__(self):
        for i in range(HIST_SLOTS):
            self.hist[i].count = 0
        self.sc = Scan()
        self.bound = False
        self.nsig = 0
        self.taken = 0
        self.iso_known = False
        self.cbids = CSide(True)
        self.casks = CSide(False)
        self.loaded = False
        self.synced = -1
        self.speculative = False
        self.kept = []
        self.watch = None
        self.warm_up = 100

    def load(self):
        """Read the bound stream's Python book; False when it holds a level the lane cannot."""
        book = self.auditor.book
        self.loaded = self.cbids.load(book.bids) and self.casks.load(book.asks)
        self.synced = self.auditor.result.messages
        return self.loaded

    def flush(self):
        """Bring the bound stream's Python book up to date (before the Python path reads)."""
        if self.auditor is None or not self.loaded:
            return
        book = self.auditor.book
        self.cbids.flush(book.bids, self.price_keys, self.price_key, self.missing)
        self.casks.flush(book.asks, self.price_keys, self.price_key, self.missing)

    def signature(self, bytes text):
        return self.sc.signature(text)

    def allow(self, int mask, bint yes):
        self.allowed[mask & 3] = yes

    def bind(self, bytes text, dict roles, long long exch_mult):
        """Bind to the shape of ``text`` (a line the Python path just read) with ``roles``:
        the field index of each part of the message and the values that must not change."""
        cdef const char *p = PyBytes_AS_STRING(text)
        cdef int i
        if not self.sc.scan(p, p + PyBytes_GET_SIZE(text)):
            self.bound = False
            return False
        # Keep copies of the keys: the line's bytes go away.
        keys = b"".join([p[self.sc.f[i].key - p: self.sc.f[i].key - p + self.sc.f[i].klen]
                         for i in range(self.sc.nf)])
        self.sig_keys = keys
        cdef const char *kp = PyBytes_AS_STRING(self.sig_keys)
        cdef int off = 0
        self.nsig = self.sc.nf
        for i in range(self.sc.nf):
            self.sig[i] = self.sc.f[i]
            self.sig[i].key = kp + off
            off += self.sc.f[i].klen
        self.i_kind = roles["kind"]
        self.kind_val = roles["kind_value"]
        self.i_sym = roles["symbol"]
        self.sym_val = roles["symbol_value"]
        self.i_exch = roles["exch"]
        self.i_first = roles["first"]
        self.i_last = roles["last"]
        self.i_prev = roles["prev"]
        self.bids_list = roles["bids"]
        self.asks_list = roles["asks"]
        self.i_const = roles.get("const", -1)
        self.const_val = roles.get("const_value", b"")
        self.exch_max = roles.get("exch_max", 1000000000000000)
        self.reset_one = roles.get("reset_one", False)
        self.exch_mult = exch_mult
        for i in range(4):
            self.allowed[i] = False
        self.allowed[self.sc.mask()] = True
        self.bound = True
        return True

    cdef bint same_shape(self) noexcept:
        cdef Scan sc = self.sc
        cdef int i
        cdef Field *a
        cdef Field *b
        if sc.nf != self.nsig:
            return False
        for i in range(self.nsig):
            a = &sc.f[i]
            b = &self.sig[i]
            if a.type != b.type or a.depth != b.depth or a.klen != b.klen:
                return False
            if a.klen and memcmp(a.key, b.key, a.klen) != 0:
                return False
        a = &sc.f[self.i_kind]
        if a.vlen != len(self.kind_val) or memcmp(a.val, PyBytes_AS_STRING(self.kind_val), a.vlen) != 0:
            return False
        a = &sc.f[self.i_sym]
        if a.vlen != len(self.sym_val) or memcmp(a.val, PyBytes_AS_STRING(self.sym_val), a.vlen) != 0:
            return False
        if self.i_const >= 0:
            a = &sc.f[self.i_const]
            if a.vlen != len(self.const_val) or memcmp(a.val, PyBytes_AS_STRING(self.const_val), a.vlen) != 0:
                return False
        return True

    cdef int local_time(self, const char *p, const char *sp, long long *out) except -2:
        """The receive time of the line (its text up to the first space), or 0 when the lane
        does not read it that way."""
        cdef long long v = 0
        cdef int digits = 0
        cdef const char *q = p
        cdef long long micros = 0
        cdef int fd = 0
        if self.time_format == TIME_EPOCH:
            while q < sp:
                if not (48 <= (<unsigned char>q[0]) <= 57):
                    return 0
                if v > 922337203685477579LL:  # one more digit would overflow
                    return 0
                v = v * 10 + (q[0] - 48)
                digits += 1
                q += 1
            if digits == 0:
                return 0
            if v >= 100000000000000000LL:
                out[0] = v // 1000
            elif v >= 100000000000000LL:
                out[0] = v
            elif v >= 100000000000LL:
                out[0] = v * 1000
            else:
                out[0] = v * 1000000
            return 1
        # ISO-8601: YYYY-MM-DDTHH:MM:SS[.fraction]Z
        if sp - p < 20 or p[10] != 84 or sp[-1] != 90:
            return 0
        if not self.iso_known or memcmp(p, self.iso_head, 19) != 0:
            try:
                secs = self.iso_seconds_of(p[:19])
            except ValueError:
                return 0
            if secs is None:
                return 0
            self.iso_seconds = secs
            memcpy(self.iso_head, p, 19)
            self.iso_known = True
        q = p + 19
        if q < sp - 1:
            if q[0] != 46:
                return 0
            q += 1
            if q >= sp - 1:
                return 0
            while q < sp - 1:
                if not (48 <= (<unsigned char>q[0]) <= 57):
                    return 0
                if fd < 6:
                    micros = micros * 10 + (q[0] - 48)
                fd += 1
                q += 1
            while fd < 6:
                micros *= 10
                fd += 1
        out[0] = self.iso_seconds * 1000000 + micros
        return 1

    cdef int read_line(self, const char *start, const char *nl, long long *local, long long *exch,
                       long long *first_id, long long *last_id, long long *prev_id,
                       bint levels=True) except -1:
        """Read one line: 1 when it is a line of the bound shape with every level a short plain
        decimal (held in lprice/lzero), else 0.  Changes nothing."""
        cdef const char *sp = <const char *>memchr(start, 32, nl - start)
        cdef Scan sc = self.sc
        cdef Field *fd
        cdef int side, li, k, qclass
        if sp == NULL:
            return 0
        if self.local_time(start, sp, local) == 0:
            return 0
        if not (-RANGE < local[0] < RANGE):
            return 0
        if not sc.scan(sp + 1, nl) or not self.same_shape():
            return 0
        fd = &sc.f[self.i_exch]
        if fd.ival >= self.exch_max:
            return 0
        exch[0] = fd.ival * self.exch_mult
        first_id[0] = sc.f[self.i_first].ival
        if self.reset_one and first_id[0] == 1:
            return 0
        last_id[0] = sc.f[self.i_last].ival
        prev_id[0] = sc.f[self.i_prev].ival if self.i_prev >= 0 else 0
        if not levels:
            return 1
        for side in range(2):
            li = self.bids_list if side == 0 else self.asks_list
            for k in range(sc.nlev[li]):
                qclass = plain_class(sc.lq[li][k], sc.lql[li][k])
                if qclass == 0 or not scaled_price(sc.lp[li][k], sc.lpl[li][k], &self.lprice[side][k]):
                    return 0
                self.lzero[side][k] = qclass == 2
        return 1

    cdef bint follows(self, long long first_id, long long prev_id, long long seq_last) noexcept:
        if self.rule == RULE_PREV_LINK:
            return prev_id == seq_last
        return first_id == seq_last + 1

    cdef object clock(self, Clock *c, long long local, long long exch):
        """``Timing.check`` for one message: its finding's detail, or None."""
        cdef long long offset, median = 0, departs = 0, b, old
        cdef int nord, lo, hi, mid, i
        cdef HistSlot *hs
        finding = None
        if c.has_last_exch and exch < c.last_exch:
            finding = {"reason": "exchange time went backwards", "exchange_us": exch,
                       "previous_us": c.last_exch}
        else:
            c.last_exch = exch
            c.has_last_exch = True
        offset = local - exch
        b = floordiv(offset, BUCKET_US)
        hs = &self.hist[(<unsigned long long>b) & (HIST_SLOTS - 1)]
        if hs.count and hs.bucket != b:
            flush_hist(self.hist_dict, hs)
        hs.bucket = b
        hs.count += 1
        c.lat_count += 1
        if not c.has_max or offset > c.max_us:
            c.max_us = offset
            c.has_max = True
        nord = c.nwin
        if nord >= MIN_SAMPLES:
            if nord % 2:
                median = c.srt[nord // 2]
            else:
                median = floordiv(c.srt[nord // 2 - 1] + c.srt[nord // 2], 2)
            departs = offset - median
            if departs < 0:
                departs = -departs
            c.compared += 1
            if departs > RATE_US:
                c.over += 1
            if departs > c.threshold:
                if finding is None:
                    finding = {"reason": "offset departs from the running median"}
                finding["offset_ms"] = (<double>offset) / 1000.0  # as Python's offset / 1000
                finding["median_ms"] = (<double>median) / 1000.0
        # insort (right) into the sorted window; then the oldest leaves it.
        lo = 0
        hi = nord
        while lo < hi:
            mid = (lo + hi) // 2
            if offset < c.srt[mid]:
                hi = mid
            else:
                lo = mid + 1
        i = nord
        while i > lo:
            c.srt[i] = c.srt[i - 1]
            i -= 1
        c.srt[lo] = offset
        c.win[(c.head + c.nwin) % (WINDOW_MAX + 1)] = offset
        c.nwin += 1
        if c.nwin > WINDOW:
            old = c.win[c.head]
            c.head = (c.head + 1) % (WINDOW_MAX + 1)
            c.nwin -= 1
            lo = 0
            hi = c.nwin + 1
            while lo < hi:  # bisect_left
                mid = (lo + hi) // 2
                if c.srt[mid] < old:
                    lo = mid + 1
                else:
                    hi = mid
            for i in range(lo, c.nwin):
                c.srt[i] = c.srt[i + 1]
        return finding

    cdef int load_clock(self, Clock *c, object tim) except -1:
        cdef int i
        c.has_last_exch = tim._last_exch is not None
        c.last_exch = tim._last_exch if c.has_last_exch else 0
        recent = tim._recent
        c.nwin = len(recent)
        c.head = 0
        if c.nwin > WINDOW or len(tim._ordered) != c.nwin:
            return 0
        for i, v in enumerate(recent):
            c.win[i] = v
        for i, v in enumerate(tim._ordered):
            c.srt[i] = v
        lat = tim.latency
        self.hist_dict = lat.hist
        c.lat_count = lat.count
        c.has_max = lat.max_us is not None
        c.max_us = lat.max_us if c.has_max else 0
        c.compared = tim.compared
        c.over = tim.over_100ms
        c.threshold = tim.threshold_us
        return 1

    cdef int store_clock(self, Clock *c, object tim) except -1:
        cdef int i
        tim._last_exch = c.last_exch if c.has_last_exch else None
        tim._recent.clear()
        tim._recent.extend(self.window(c))
        tim._ordered[:] = [c.srt[i] for i in range(c.nwin)]
        self.flush_hists()
        lat = tim.latency
        lat.count = c.lat_count
        lat.max_us = c.max_us if c.has_max else None
        tim.compared = c.compared
        tim.over_100ms = c.over
        return 0

    cdef list window(self, Clock *c):
        return [c.win[(c.head + i) % (WINDOW_MAX + 1)] for i in range(c.nwin)]

    cdef int flush_hists(self) except -1:
        cdef int i
        for i in range(HIST_SLOTS):
            if self.hist[i].count:
                flush_hist(self.hist_dict, &self.hist[i])
        return 0

    cdef int apply_levels(self, long long t) except -1:
        cdef Scan sc = self.sc
        cdef int side, li, k
        cdef CSide cs
        for side in range(2):
            li = self.bids_list if side == 0 else self.asks_list
            cs = self.cbids if side == 0 else self.casks
            for k in range(sc.nlev[li]):
                cs.apply(self.lprice[side][k], sc.lp[li][k], sc.lpl[li][k], sc.lq[li][k],
                         sc.lql[li][k], self.lzero[side][k], t, self.speculative)
        return 0

    def run(self, bytes block, Py_ssize_t pos, long long n):
        """Take the lines of ``block`` from ``pos`` while the lane can; return where it
        stopped and the number of the last line taken."""
        cdef const char *buf = PyBytes_AS_STRING(block)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(block)
        cdef const char *start
        cdef const char *nl
        cdef long long local = 0, exch = 0, first_id, last_id, prev_id
        cdef long long taken = 0, seq_last, last_taken = 0
        cdef int mask
        cdef Clock c
        cdef Lvl *eb
        cdef Lvl *ea

        aud = self.auditor
        if not self.bound or aud is None or self.speculative:
            return pos, n
        book = aud.book
        if book.bids.exact or book.asks.exact:
            return pos, n
        res = aud.result
        tim = aud.timing
        seq = aud.seq
        if not self.load_clock(&c, tim):
            return pos, n
        if not self.loaded or self.synced != res.messages:
            if not self.load():
                return pos, n
        seq_last = seq.last
        cdef long long messages = res.messages
        cdef bint has_first = res.first_us is not None
        cdef long long first_us = res.first_us if has_first else 0
        cdef bint has_lastus = res.last_us is not None
        cdef long long last_us = res.last_us if has_lastus else 0
        cdef long long deltas = aud.deltas_since_snapshot
        cdef bint has_local = aud.last_local_us is not None
        cdef long long last_local = aud.last_local_us if has_local else 0
        cdef bint crossed = aud.crossed
        cdef bint safe = aud.safe
        open_unsafe = aud.open_unsafe
        cdef long long open_msgs = 0
        cdef long long seen_ring[SEEN_MAX]
        cdef CSide cbids = self.cbids, casks = self.casks
        sink = aud.sink
        cdef long long next_emit = aud.next_emit_us
        # Diffs applied while the book is unsafe are kept for a REST snapshot (BookAuditor.
        # unsafe_applied): the lines are noted here and read into messages by shared.fastlane.
        cdef bint keep = aud.bridged and not safe
        cdef long long keep_max = aud.unsafe_applied.maxlen or 0
        self.kept = []

        while pos < size:
            start = buf + pos
            nl = <const char *>memchr(start, 10, size - pos)
            if nl == NULL:
                break
            if not self.read_line(start, nl, &local, &exch, &first_id, &last_id, &prev_id):
                break
            if not self.follows(first_id, prev_id, seq_last):
                break
            mask = self.sc.mask()
            if not self.allowed[mask] and (self.watch is None or self.variants[mask] is None):
                break
            # -- from here on the line is the lane's: applied as BookAuditor would. --
            change = None
            if not self.allowed[mask]:
                change = self.watch.check(self.variants[mask])
                self.allowed[mask] = self.watch.fingerprints.get(self.variant_fps[mask], 0) > self.warm_up
            self.apply_levels(0)
            deltas += 1
            messages += 1
            if not has_first or local < first_us:
                first_us = local
                has_first = True
            if not has_lastus or local > last_us:
                last_us = local
                has_lastus = True
            seen_ring[taken % SEEN_MAX] = local
            drift = self.clock(&c, local, exch)
            if drift is not None:
                aud._find(self.drift_fault, self.path, n + 1, local, **drift)
            if safe:
                eb = cbids.best()
                ea = casks.best() if eb != NULL else NULL
                if eb != NULL and ea != NULL and eb.price >= ea.price:
                    if not crossed:
                        crossed = True
                        aud._find(self.crossed_fault, self.path, n + 1, local,
                                  best_bid=eb.ptext[:eb.plen].decode("ascii"),
                                  best_ask=ea.ptext[:ea.plen].decode("ascii"))
                else:
                    crossed = False
            if not has_local or local > last_local:
                last_local = local
                has_local = True
            if sink is not None and local >= next_emit:
                # The rebuilt book is due: the Python book is brought to this message first.
                self.flush()
                aud.emit_row(local, exch)
                next_emit = aud.next_emit_us
            if open_unsafe is not None:
                open_msgs += 1
            if change is not None:  # after the message's own findings, as the Python path
                aud.format_change(self.path, n + 1, local, change)
            if keep:
                self.kept.append((pos, nl - buf, n + 1))
                if len(self.kept) > 2 * keep_max:
                    del self.kept[:-keep_max]
            seq_last = last_id
            last_taken = local
            n += 1
            taken += 1
            pos = nl - buf + 1

        if taken:
            seq.last = seq_last
            self.store_clock(&c, tim)
            res.messages = messages
            self.synced = messages
            res.first_us = first_us
            res.last_us = last_us
            aud.deltas_since_snapshot = deltas
            aud.last_local_us = last_local
            aud.last_seen_us = last_taken
            aud.applied_us = last_taken
            aud.crossed = crossed
            aud.recent_us.extend([seen_ring[i % SEEN_MAX] for i in range(max(0, taken - SEEN_MAX), taken)])
            if open_unsafe is not None:
                open_unsafe.messages += open_msgs
            self.summary.lines += taken
            self.taken += taken
        return pos, n

    # -- speculative runs --------------------------------------------------------------

    def probe(self, bytes line):
        """(receive time, exchange time) of ``line`` (ending with a line end) when it is a line
        of the bound shape, else None."""
        cdef const char *p = PyBytes_AS_STRING(line)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(line)
        cdef long long local = 0, exch = 0, first_id, last_id, prev_id
        if n == 0 or p[n - 1] != 10:
            return None
        if not self.read_line(p, p + n - 1, &local, &exch, &first_id, &last_id, &prev_id, False):
            return None
        return local, exch

    def speculate(self, bytes block, Py_ssize_t pos, Py_ssize_t end, list window, object last_exch,
                  long long threshold_us, long long interval_us=0, int depth=0, long long next_emit=0,
                  int warm_up=100):
        """Take the lines of ``block`` from ``pos`` that start before ``end``, from the clock
        window and last exchange time given (read from the lines before), on a book not known
        here; stop at the first line the lane cannot take.  Returns where it stopped."""
        cdef const char *buf = PyBytes_AS_STRING(block)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(block)
        cdef const char *start
        cdef const char *nl
        cdef long long local = 0, exch = 0, first_id, last_id, prev_id, t, ob, oa
        cdef Lvl *eb
        cdef Lvl *ea
        cdef Clock *c = &self.sclock
        cdef int i, mask
        from array import array
        self.speculative = True
        self.hist_dict = {}
        self.drifts = []
        self.locals_ = array("q")
        self.best = array("q")
        self.messages = 0
        self.first_us = self.last_us = self.max_local = None
        c.has_last_exch = last_exch is not None
        c.last_exch = last_exch if c.has_last_exch else 0
        c.nwin = len(window)
        c.head = 0
        if c.nwin > WINDOW:
            return pos
        for i, v in enumerate(window):
            c.win[i] = v
        for i, v in enumerate(sorted(window)):
            c.srt[i] = v
        c.lat_count = 0
        c.has_max = False
        c.compared = c.over = 0
        c.threshold = threshold_us
        self.last_ob = self.last_oa = NONE - 1  # differs from any recorded pair
        self.has_seq = False
        self.rows = []
        self.shapes = []
        for i in range(4):
            self.mask_count[i] = 0
        self.start_next_emit = next_emit
        locals_append = self.locals_.append
        best_extend = self.best.extend
        cdef CSide cbids = self.cbids, casks = self.casks
        while pos < end:
            start = buf + pos
            nl = <const char *>memchr(start, 10, size - pos)
            if nl == NULL:
                break
            if not self.read_line(start, nl, &local, &exch, &first_id, &last_id, &prev_id):
                break
            if not self.has_seq:
                self.start_prev = prev_id if self.rule == RULE_PREV_LINK else first_id - 1
                self.seq_last = self.start_prev
                self.has_seq = True
            if not self.follows(first_id, prev_id, self.seq_last):
                break
            t = self.messages
            mask = self.sc.mask()
            if self.mask_count[mask] <= warm_up:
                # Until its shape is past the warm-up, a message counts in the shape watch.
                self.mask_count[mask] += 1
                self.shapes.append((t, mask))
            self.apply_levels(t)
            locals_append(local)
            drift = self.clock(c, local, exch)
            if drift is not None:
                self.drifts.append((t, local, drift))
            eb = cbids.best()
            ea = casks.best()
            ob = eb.price if eb != NULL else NONE
            oa = ea.price if ea != NULL else NONE
            if ob != self.last_ob or oa != self.last_oa:
                best_extend((t, ob, oa))
                self.last_ob = ob
                self.last_oa = oa
            if interval_us > 0 and local >= next_emit:
                # A rebuilt book is due here: the best levels this run knows, to be merged with
                # the book's own by the assembly.
                next_emit = (floordiv(local, interval_us) + 1) * interval_us
                self.rows.append((t, local, exch, cbids.top(depth), casks.top(depth)))
            if self.first_us is None or local < self.first_us:
                self.first_us = local
            if self.last_us is None or local > self.last_us:
                self.last_us = local
            self.seq_last = last_id
            self.messages += 1
            pos = nl - buf + 1
        self.flush_hists()
        self.next_emit = next_emit
        return pos

    def speculation(self):
        """What a speculative run found, for the assembly (``shared.chunking``)."""
        cdef Clock *c = &self.sclock
        return {
            "messages": self.messages,
            "start_prev": self.start_prev if self.has_seq else None,
            "last_id": self.seq_last if self.has_seq else None,
            "last_exch": c.last_exch if c.has_last_exch else None,
            "window": self.window(c),
            "hist": self.hist_dict,
            "lat_count": c.lat_count,
            "max_us": c.max_us if c.has_max else None,
            "compared": c.compared,
            "over": c.over,
            "first_us": self.first_us,
            "last_us": self.last_us,
            "drifts": self.drifts,
            "shapes": self.shapes,
            "rows": self.rows,
            "start_next_emit": self.start_next_emit,
            "next_emit": self.next_emit,
            "bids": self.cbids.overlay(),
            "asks": self.casks.overlay(),
        }


cdef int flush_hist(dict hist, HistSlot *hs) except -1:
    b = hs.bucket
    hist[b] = hist.get(b, 0) + hs.count
    hs.count = 0
    return 0


cdef int cmp_asc(const void *x, const void *y) noexcept nogil:
    cdef long long a = (<long long *>x)[0], b = (<long long *>y)[0]
    return (a > b) - (a < b)


cdef int cmp_desc(const void *x, const void *y) noexcept nogil:
    cdef long long a = (<long long *>x)[0], b = (<long long *>y)[0]
    return (a < b) - (a > b)


cdef class Base:
    """One side of the book a chunk's overlay lies on, as the assembly finds it: its levels
    by scaled price with their texts (read as the lane reads a Python side), and their
    prices best first.  The chunks laid one after the other are laid on it too (:meth:`lay`),
    so the Python side is read once for a run of chunks."""

    cdef CSide levels
    cdef long long *prices  # PRESENT prices, best first
    cdef long long n
    cdef public bint ok  # every level a text the lane reads
    cdef bint bid

    def __cinit__(self, object side):
        self.bid = side.bid
        self.prices = NULL
        self.n = 0
        self.levels = CSide(self.bid)
        self.ok = not side.exact and self.levels.load(side)
        if self.ok:
            self.sort()

    def __dealloc__(self):
        free(self.prices)

    cdef int sort(self) except -1:
        cdef CSide t = self.levels
        cdef long long i, n = 0
        free(self.prices)
        self.prices = <long long *>malloc((t.live + 1) * sizeof(long long))
        if self.prices == NULL:
            raise MemoryError()
        for i in range(t.cap):
            if t.table[i].state == PRESENT:
                self.prices[n] = t.table[i].price
                n += 1
        self.n = n
        qsort(self.prices, n, sizeof(long long), cmp_desc if self.bid else cmp_asc)
        return 0

    def lay(self, bytes packed):
        """Lay the overlay ``packed`` here, as :func:`lay_overlay` would on the Python side;
        False (nothing changed) where this side is not one the lane reads."""
        cdef const char *p = PyBytes_AS_STRING(packed)
        cdef long long m = PyBytes_GET_SIZE(packed) // sizeof(Lvl), i
        cdef CSide t = self.levels
        cdef const Lvl *x
        cdef Lvl *e
        if not self.ok:
            return False
        for i in range(m):
            if (t.used + 1) * 2 > t.cap:
                t.grow(False)  # drops the deleted prices
            x = <const Lvl *>(p + i * sizeof(Lvl))
            e = t.slot(x.price)
            if x.state == PRESENT:
                if e.state != PRESENT:
                    if e.state == ABSENT:
                        t.used += 1
                    t.live += 1
                    e.price = x.price
                    e.state = PRESENT
                    e.dirty = e.inherit = e.retexted = 0
                    e.first = -1
                    memcpy(e.ptext, x.ptext, x.plen)
                    e.plen = x.plen
                elif not x.inherit:  # written with its own text (else the side's stays)
                    memcpy(e.ptext, x.ptext, x.plen)
                    e.plen = x.plen
                memcpy(e.qtext, x.qtext, x.qlen)
                e.qlen = x.qlen
            elif x.state == DELETED and e.state == PRESENT:
                e.state = DELETED
                e.dirty = 0
                t.live -= 1
        self.sort()
        return True

    cdef long long *touched(self, CSide overlay) except NULL:
        """For each level (best first), the message that first touched it (a large number
        for a level the overlay never touched)."""
        cdef long long *at = <long long *>malloc((self.n + 1) * sizeof(long long))
        cdef long long i
        cdef Lvl *e
        if at == NULL:
            raise MemoryError()
        for i in range(self.n):
            e = overlay.slot(self.prices[i])
            at[i] = e.first if e.state != ABSENT else 9223372036854775807LL
        return at

    cdef object held(self, long long price):
        """The text of ``price`` here, or None where this side does not hold it."""
        cdef Lvl *e = self.levels.slot(price)
        if e.state != PRESENT:
            return None
        return PyUnicode_FromStringAndSize(e.ptext, e.plen)

    cdef tuple level(self, long long price):
        """(price, price text, quantity text) of a price held here."""
        cdef Lvl *e = self.levels.slot(price)
        return (price, PyUnicode_FromStringAndSize(e.ptext, e.plen), PyUnicode_FromStringAndSize(e.qtext, e.qlen))

    cdef object text_at(self, long long price, bint from_base, CSide overlay):
        """The text the book shows for ``price``: the book's own where the run did not touch
        it or only updated it, else the run's (None where the run wrote it anew after a
        delete)."""
        cdef Lvl *e
        if from_base:
            return self.held(price)
        e = overlay.slot(price)
        if e.retexted:
            return None
        if e.inherit:
            held = self.held(price)
            if held is not None:  # the book's text stays
                return held
        return PyUnicode_FromStringAndSize(e.ptext, e.plen)


def overlay_table(bytes packed):
    """A speculative run's overlay (``CSide.overlay``) as a table, for :func:`resolve` and
    :func:`rows`."""
    cdef CSide t = CSide(True)
    t.take(packed)
    return t


def resolve(Base bids, Base asks, CSide ob_side, CSide oa_side, object best,
            long long messages, bint crossed, bint safe):
    """The crossed-book findings of a speculative run, now that the book it started from is
    known (``bids`` and ``asks``, before the overlay is laid): ``ob_side`` and ``oa_side``
    the run's overlay (:func:`overlay_table`), ``best`` its (message, best bid, best ask) records.  Returns
    ([(message, best bid text, best ask text)], crossed at the end), or None where a level of
    the book is not a text the lane reads, or a finding would need a text the run did not
    keep (a price deleted and written anew)."""
    cdef long long nbest = len(best) // 3
    cdef long long t, j = 0, ib = 0, ia = 0, ob = NONE, oa = NONE, bid, ask, bbb, bba
    cdef long long *bt = NULL
    cdef long long *at = NULL
    cdef long long nb = bids.n, na = asks.n
    cdef bint now
    cdef long long[:] bestv = best
    if not bids.ok or not asks.ok:
        return None
    try:
        bt = bids.touched(ob_side)
        at = asks.touched(oa_side)
        events = []
        for t in range(messages):
            while j < nbest and bestv[3 * j] <= t:
                ob = bestv[3 * j + 1]
                oa = bestv[3 * j + 2]
                j += 1
            while ib < nb and bt[ib] <= t:  # touched by then: the overlay says
                ib += 1
            while ia < na and at[ia] <= t:
                ia += 1
            if not safe:
                continue
            bbb = bids.prices[ib] if ib < nb else NONE
            bba = asks.prices[ia] if ia < na else NONE
            bid = ob if ob > bbb else bbb
            if oa == NONE:
                ask = bba
            elif bba == NONE:
                ask = oa
            else:
                ask = oa if oa < bba else bba
            now = bid != NONE and ask != NONE and bid >= ask
            if now and not crossed:
                b_text = bids.text_at(bid, bid == bbb, ob_side)
                a_text = asks.text_at(ask, ask == bba, oa_side)
                if b_text is None or a_text is None:
                    return None
                events.append((t, b_text, a_text))
            crossed = now
        return events, crossed
    finally:
        free(bt)
        free(at)


def rows(Base bids, Base asks, CSide ob_side, CSide oa_side, list due, int depth):
    """The rebuilt-book rows due inside a chunk (``due``: (message, local, exch, best bids,
    best asks) as the run knew them): at each, the best levels of the book that the chunk had
    not touched by then merged with the chunk's own.  [(local, exch, bids, asks)], each side
    a list of (price text, quantity text), best first."""
    cdef Base base
    cdef CSide ov
    cdef long long *first
    cdef long long *nxt
    cdef long long i, prev, t, n, head
    cdef int side
    out = []
    state = []
    try:
        for side in range(2):
            base = bids if side == 0 else asks
            ov = ob_side if side == 0 else oa_side
            first = base.touched(ov)
            nxt = <long long *>malloc((base.n + 1) * sizeof(long long))
            if nxt == NULL:
                free(first)
                raise MemoryError()
            for i in range(base.n):
                nxt[i] = i + 1
            state.append([<long long>first, <long long>nxt, 0])  # head of the untouched list
        for t, local, exch, top_b, top_a in due:
            row = []
            for side in range(2):
                base = bids if side == 0 else asks
                ov = ob_side if side == 0 else oa_side
                first = <long long *><long long>state[side][0]
                nxt = <long long *><long long>state[side][1]
                head = state[side][2]
                # Walk the untouched levels best first; drop for good those touched by now.
                kept = []
                prev = -1
                i = head
                while i < base.n and len(kept) < depth:
                    if first[i] <= t:
                        if prev < 0:
                            head = nxt[i]
                        else:
                            nxt[prev] = nxt[i]
                    else:
                        kept.append(base.level(base.prices[i]))
                        prev = i
                    i = nxt[i]
                state[side][2] = head
                top = top_b if side == 0 else top_a
                known = [(k, (base.held(k) or p) if inherit else p, q) for k, p, q, inherit in top]
                merged = sorted(known + kept, reverse=side == 0)[:depth]
                row.append([(p, q) for _, p, q in merged])
            out.append((local, exch, row[0], row[1]))
        return out
    finally:
        for first_ptr, nxt_ptr, _ in state:
            free(<long long *><long long>first_ptr)
            free(<long long *><long long>nxt_ptr)
