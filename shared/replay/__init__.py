"""Replay: fetching the messages a gap lost from replay sources, checking them, merging them.

Pure parts (no HTTP, no Redis): :mod:`.channels` (which Tardis channels carry a stream),
:mod:`.request` (what a gap asks for), :mod:`.fill` (reading an answer and keeping only what
bridges the gap).  Edges: :mod:`.tardis` (the Tardis-compatible HTTP client),
:mod:`.archive` (captures on disk answering the same question), :mod:`.limits` (one rate
limit and one circuit breaker per source, shared by every worker through Redis or kept in
memory), :mod:`.fetch` (trying the sources in order).
"""
