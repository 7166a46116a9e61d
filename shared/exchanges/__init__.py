"""Venue modules, one per exchange family; each exposes ``VENUE`` (see :mod:`.base`).

Modules are discovered, so adding a venue is adding a module.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from shared.exchanges.base import Venue, VenueRules
from shared.sequencing import NONE


@cache
def venues() -> tuple[Venue, ...]:
    found: list[Venue] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        venue = getattr(module, "VENUE", None)
        if isinstance(venue, Venue):
            found.append(venue)
    return tuple(found)


@cache
def _rules_index() -> dict[str, VenueRules]:
    return {r.exchange: r for v in venues() for r in v.rules}


def rules_for(exchange: str) -> VenueRules:
    """The rules of a Tardis exchange id; an unknown id gets no sequencing and no checksum."""
    return _rules_index().get(exchange) or VenueRules(exchange, book_rule=NONE, trade_rule=NONE)


def venue_for_url(url: str) -> Venue | None:
    for v in venues():
        if any(mark in url for mark in v.url_marks):
            return v
    return None


def venue_for_file(name: str) -> Venue | None:
    """cryptofeed names captures ``<EXCHANGE>.ws.N.0``: the prefix names the venue."""
    prefix = name.split(".", 1)[0].split("-", 1)[0].upper()
    for v in venues():
        if prefix in v.file_prefixes:
            return v
    return None


def venue_for_message(obj: object) -> Venue | None:
    for v in venues():
        try:
            if v.sniff(obj):
                return v
        except Exception:  # a sniff must never break reading
            continue
    return None
