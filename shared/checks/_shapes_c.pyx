# cython: language_level=3, boundscheck=False, wraparound=False
"""The shape fingerprint of :mod:`shared.checks.shapes`, compiled: the same tuples for the
same message, built without the interpreter's per-step cost.  ``shapes.py`` holds the
reference in pure Python and uses this one when it was built (``make setup``) and
``RETAPE_PURE_PYTHON`` is not set; the tests compare the two on every captured message."""


cpdef object fingerprint(object obj):
    cdef object t = type(obj)
    cdef dict d
    cdef list items, types, nested, first_list
    cdef object v, vt, first
    cdef bint container
    if t is dict:
        d = <dict>obj
        types = []
        nested = []
        container = False
        for v in d.values():
            vt = type(v)
            types.append(vt)
            if vt is dict or vt is list:
                container = True
                nested.append(fingerprint(v))
        if container:
            return (tuple(d), tuple(types), tuple(nested))
        return (tuple(d), tuple(types))
    if t is list:
        items = <list>obj
        if not items:
            return ()
        first = items[0]
        if type(first) is list:
            first_list = <list>first
            return tuple([type(v) for v in first_list])
        if type(first) is dict:
            return fingerprint(first)
        return tuple([type(v) for v in items])
    return t
