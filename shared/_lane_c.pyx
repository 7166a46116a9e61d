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
from libc.stdlib cimport calloc, free, malloc, realloc
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

cdef enum:
    SCALE = 10
    LVL_TEXT = 16
    ABSENT = 0
    PRESENT = 1
    DELETED = 2

cdef long long POW10[19]
POW10[0] = 1
for _i in range(1, 19):
    POW10[_i] = POW10[_i - 1] * 10


cdef struct Lvl:
    long long price
    unsigned char state  # ABSENT (a free slot), PRESENT, DELETED (a tombstone)
    unsigned char dirty
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

    cdef int grow(self) except -1:
        """Twice the room (or the same, without tombstones that need no flush)."""
        cdef Lvl *old = self.table
        cdef long long oldcap = self.cap, i
        cdef long long cap = self.cap
        cdef Lvl *e
        if self.live * 4 > cap:
            cap *= 2
        self.table = <Lvl *>calloc(cap, sizeof(Lvl))
        if self.table == NULL:
            self.table = old
            raise MemoryError()
        self.cap = cap
        self.used = 0
        for i in range(oldcap):
            if old[i].state == PRESENT or (old[i].state == DELETED and old[i].dirty):
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
        cdef long long n = self.nheap - 1, i = 0, c, v
        self.nheap = n
        if n == 0:
            return
        v = self.heap[n]
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            if c + 1 < n and self.heap[c + 1] < self.heap[c]:
                c += 1
            if v <= self.heap[c]:
                break
            self.heap[i] = self.heap[c]
            i = c
        self.heap[i] = v

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
                   bint zero) except -1:
        """One level, as ``shared.book.py_apply_levels`` applies it (a price written another
        way is the same level and keeps the text it has)."""
        cdef Lvl *e = self.slot(price)
        if zero:
            if e.state == PRESENT:
                e.state = DELETED
                self.live -= 1
                self.mark(e)
            return 0
        if e.state == PRESENT:
            memcpy(e.qtext, q, qlen)
            e.qlen = qlen
            self.mark(e)
            return 0
        if e.state == ABSENT:
            self.used += 1
        e.price = price
        e.state = PRESENT
        memcpy(e.ptext, p, plen)
        e.plen = plen
        memcpy(e.qtext, q, qlen)
        e.qlen = qlen
        self.live += 1
        self.push(price)
        self.mark(e)
        if self.used * 2 > self.cap:
            self.grow()
        if self.nheap > 4 * self.live + 1024:
            self.rebuild_heap()
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
            if type(p) is not str or type(q) is not str:
                return False
            pb = (<str>p).encode("ascii", "replace")
            qb = (<str>q).encode("ascii", "replace")
            if len(qb) > LVL_TEXT or not scaled_price(pb, len(pb), &price):
                return False
            e = self.slot(price)
            if e.state == PRESENT:
                return False  # two texts of one price (cannot be, but not for the lane)
            e.price = price
            e.state = PRESENT
            e.dirty = 0
            memcpy(e.ptext, <const char *>pb, len(pb))
            e.plen = len(pb)
            memcpy(e.qtext, <const char *>qb, len(qb))
            e.qlen = len(qb)
            self.used += 1
            self.live += 1
            self.push(price)
        return True

    cdef int flush(self, object side, dict pkeys, object price_key, object missing) except -1:
        """Bring the Python side up to date with the levels changed here."""
        cdef dict d = side.levels
        cdef dict text_of
        cdef list heap
        cdef long long i
        cdef Lvl *e
        if not self.ndirty:
            return 0
        text_of = side._text_of
        heap = side._heap
        for i in range(self.ndirty):
            e = self.slot(self.dirty[i])
            e.dirty = 0
            p = PyUnicode_FromStringAndSize(e.ptext, e.plen)
            k = pkeys.get(p, missing)
            if k is missing:
                k = price_key(p)
            other = text_of.get(k)
            if e.state == PRESENT:
                if other is not None and other in d:
                    if other != p:
                        del d[other]
                        text_of[k] = p
                    d[p] = PyUnicode_FromStringAndSize(e.qtext, e.qlen)
                else:
                    d[p] = PyUnicode_FromStringAndSize(e.qtext, e.qlen)
                    if other is None:
                        heappush(heap, -k if self.bid else k)
                    text_of[k] = p
            elif other is not None:
                d.pop(other, None)
        self.ndirty = 0
        if len(text_of) > 4 * len(d) + 1024:  # where Side._apply_fast compacts
            side._compact()
        return 0


cdef class Lane:
    """One bound stream and the state it carries between the runs of lines it takes."""

    # The binding (set by shared.fastlane).
    cdef Scan sc
    cdef public object auditor
    cdef public object summary
    cdef public object price_keys
    cdef public object price_key
    cdef public object missing
    cdef public object crossed_fault
    cdef public bint bound
    cdef public object path
    cdef Field sig[MAXF]
    cdef int nsig
    cdef bytes sig_keys  # keeps the signature's key bytes alive
    cdef int i_kind, i_sym, i_exch, i_first, i_last, i_prev, bids_list, asks_list
    cdef bytes kind_val, sym_val
    # Which emptiness of the lists of levels is past its shape warm-up (by Scan.mask).
    cdef bint allowed[4]
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
    # The lane's book of the bound stream, and the auditor's message count when it was last
    # the same as the Python book (another count: the Python path changed the book).
    cdef CSide cbids, casks
    cdef public long long synced
    cdef public bint loaded
    # One line's levels, checked before any is applied.
    cdef long long lprice[2][MAXL]
    cdef char lzero[2][MAXL]

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
        if sc.nf != self.nsig or not self.allowed[sc.mask()]:
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
            memcpy_19(self.iso_head, p)
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

    def run(self, bytes block, Py_ssize_t pos, long long n):
        """Take the lines of ``block`` from ``pos`` while the lane can; return where it
        stopped and the number of the last line taken."""
        cdef const char *buf = PyBytes_AS_STRING(block)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(block)
        cdef const char *start
        cdef const char *nl
        cdef const char *sp
        cdef Scan sc = self.sc
        cdef long long local = 0, exch = 0, first_id, last_id, prev_id, offset, median, departs, b
        cdef long long seq_last, old
        cdef long long taken = 0
        cdef int nord, i, lo, hi, mid, side, k, li
        cdef Field *fd
        cdef int qclass
        cdef bint ok
        cdef int rule = self.rule
        cdef HistSlot *hs

        aud = self.auditor
        if not self.bound or aud is None:
            return pos, n
        book = aud.book
        bids = book.bids
        asks = book.asks
        if bids.exact or asks.exact:
            return pos, n
        res = aud.result
        tim = aud.timing
        seq = aud.seq
        seq_last = seq.last
        # The clock (shared.checks.timing.Timing): its window, sorted and in arrival order,
        # held in C for the run.
        cdef bint has_last_exch = tim._last_exch is not None
        cdef long long last_exch = tim._last_exch if has_last_exch else 0
        recent = tim._recent
        cdef list ordered = tim._ordered
        cdef long long win[WINDOW_MAX + 1]
        cdef long long srt[WINDOW_MAX + 1]
        cdef int nwin = len(recent)
        cdef int head = 0  # index of the oldest offset in the ring ``win``
        if nwin > WINDOW or len(ordered) != nwin:
            return pos, n
        for i, v in enumerate(recent):
            win[i] = v
        for i in range(nwin):
            srt[i] = ordered[i]
        lat = tim.latency
        cdef dict hist = lat.hist
        cdef long long lat_count = lat.count
        cdef bint has_max = lat.max_us is not None
        cdef long long max_us = lat.max_us if has_max else 0
        cdef long long compared = tim.compared
        cdef long long over = tim.over_100ms
        cdef long long threshold = tim.threshold_us
        # The auditor's counters.
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
        seen = aud.recent_us
        cdef long long seen_ring[SEEN_MAX]
        if not self.loaded or self.synced != res.messages:
            if not self.load():
                return pos, n
        cdef CSide cbids = self.cbids, casks = self.casks
        cdef CSide cs
        cdef Lvl *eb
        cdef Lvl *ea
        cdef HistSlot *hslots = self.hist

        while pos < size:
            start = buf + pos
            nl = <const char *>memchr(start, 10, size - pos)
            if nl == NULL:
                break
            sp = <const char *>memchr(start, 32, nl - start)
            if sp == NULL:
                break
            if self.local_time(start, sp, &local) == 0:
                break
            if not (-RANGE < local < RANGE):
                break
            if not sc.scan(sp + 1, nl) or not self.same_shape():
                break
            fd = &sc.f[self.i_exch]
            if fd.ival >= 1000000000000000LL:
                break
            exch = fd.ival * self.exch_mult
            first_id = sc.f[self.i_first].ival
            last_id = sc.f[self.i_last].ival
            prev_id = sc.f[self.i_prev].ival if self.i_prev >= 0 else 0
            # Sequencing: a diff that follows the last one applied, nothing held back.
            if rule == RULE_PREV_LINK:
                if prev_id != seq_last:
                    break
            elif first_id != seq_last + 1:
                break
            # The clock: a finding (time going back, an offset off the median) is for Python.
            if has_last_exch and exch < last_exch:
                break
            offset = local - exch
            nord = nwin
            median = 0
            departs = 0
            if nord >= MIN_SAMPLES:
                if nord % 2:
                    median = srt[nord // 2]
                else:
                    median = floordiv(srt[nord // 2 - 1] + srt[nord // 2], 2)
                departs = offset - median
                if departs < 0:
                    departs = -departs
                if departs > threshold:
                    break
            # The levels: every price and quantity a short plain decimal, or the line is for
            # Python.  All are checked before any is applied.
            ok = True
            for side in range(2):
                li = self.bids_list if side == 0 else self.asks_list
                for k in range(sc.nlev[li]):
                    qclass = plain_class(sc.lq[li][k], sc.lql[li][k])
                    if qclass == 0 or sc.lql[li][k] > LVL_TEXT or not scaled_price(
                        sc.lp[li][k], sc.lpl[li][k], &self.lprice[side][k]
                    ):
                        ok = False
                        break
                    self.lzero[side][k] = qclass == 2
                if not ok:
                    break
            if not ok:
                break
            # -- from here on the line is the lane's: apply it as BookAuditor would. --
            for side in range(2):
                li = self.bids_list if side == 0 else self.asks_list
                cs = cbids if side == 0 else casks
                for k in range(sc.nlev[li]):
                    cs.apply(self.lprice[side][k], sc.lp[li][k], sc.lpl[li][k], sc.lq[li][k],
                             sc.lql[li][k], self.lzero[side][k])
            deltas += 1
            messages += 1
            if not has_first or local < first_us:
                first_us = local
                has_first = True
            if not has_lastus or local > last_us:
                last_us = local
                has_lastus = True
            seen_ring[taken % SEEN_MAX] = local
            # Timing.check, its findings excluded above.
            last_exch = exch
            has_last_exch = True
            b = floordiv(offset, BUCKET_US)
            hs = &hslots[(<unsigned long long>b) & (HIST_SLOTS - 1)]
            if hs.count and hs.bucket != b:
                flush_hist(hist, hs)
            hs.bucket = b
            hs.count += 1
            lat_count += 1
            if not has_max or offset > max_us:
                max_us = offset
                has_max = True
            if nord >= MIN_SAMPLES:
                compared += 1
                if departs > RATE_US:
                    over += 1
            # insort (right) into the sorted window, then the oldest leaves it.
            lo = 0
            hi = nwin
            while lo < hi:
                mid = (lo + hi) // 2
                if offset < srt[mid]:
                    hi = mid
                else:
                    lo = mid + 1
            i = nwin
            while i > lo:
                srt[i] = srt[i - 1]
                i -= 1
            srt[lo] = offset
            win[(head + nwin) % (WINDOW_MAX + 1)] = offset
            nwin += 1
            if nwin > WINDOW:
                old = win[head]
                head = (head + 1) % (WINDOW_MAX + 1)
                nwin -= 1
                lo = 0
                hi = nwin + 1
                while lo < hi:  # bisect_left
                    mid = (lo + hi) // 2
                    if srt[mid] < old:
                        lo = mid + 1
                    else:
                        hi = mid
                for i in range(lo, nwin):
                    srt[i] = srt[i + 1]
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
            if open_unsafe is not None:
                open_msgs += 1
            seq_last = last_id
            n += 1
            taken += 1
            pos = nl - buf + 1

        if taken:
            seq.last = seq_last
            tim._last_exch = last_exch
            recent.clear()
            recent.extend([win[(head + i) % (WINDOW_MAX + 1)] for i in range(nwin)])
            ordered[:] = [srt[i] for i in range(nwin)]
            for i in range(HIST_SLOTS):
                if hslots[i].count:
                    flush_hist(hist, &hslots[i])
            lat.count = lat_count
            lat.max_us = max_us
            tim.compared = compared
            tim.over_100ms = over
            res.messages = messages
            self.synced = messages
            res.first_us = first_us
            res.last_us = last_us
            aud.deltas_since_snapshot = deltas
            aud.last_local_us = last_local
            aud.last_seen_us = local
            aud.applied_us = local
            aud.crossed = crossed
            seen.extend([seen_ring[i % SEEN_MAX] for i in range(max(0, taken - SEEN_MAX), taken)])
            if open_unsafe is not None:
                open_unsafe.messages += open_msgs
            self.summary.lines += taken
            self.taken += taken
        return pos, n


cdef inline void memcpy_19(char *dst, const char *src) noexcept:
    cdef int i
    for i in range(19):
        dst[i] = src[i]


cdef int plain_class(const char *b, int n) noexcept:
    """The class ``shared.numbers.classify_qty`` gives a short plain decimal (digits, at most
    one point, at most 15 digits: an exact float below 1e30): 1 positive, 2 zero; 0 for any
    other text (the caller asks the book's own check)."""
    cdef int i, digits = 0, points = 0
    cdef bint nonzero = False
    cdef char c
    if n == 0 or b[0] == 46:
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


cdef int flush_hist(dict hist, HistSlot *hs) except -1:
    b = hs.bucket
    hist[b] = hist.get(b, 0) + hs.count
    hs.count = 0
    return 0
