"""Ledger reconstruction: account histories rebuilt from fragments (exports, API logs, chain
records, notes), every field with its source, confidence and the fragments behind it.

Pure parts: :mod:`.values` (exact amounts with their uncertainty, times to UTC microseconds),
:mod:`.schemas` (which columns mean what, recognised by header).
"""
