"""Notes through the LLM: ask (or read the cache), check every claim, apply what holds.

Changes it may make to a ledger (see :mod:`shared.ledger.llm` for the checks): link a note to a
known transaction (the note joins its fragments; a field the transaction lacks may be filled,
``llm``, confidence at most 0.8); add a transaction the note states, with a type word the note
uses ("withdrew", "deposited", "bought"...) and a day it names (``llm``, confidence at most 0.5).
It never changes a value the fragments gave.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson

from shared.errors import RetapeError
from shared.ledger.balances import balances
from shared.ledger.fragments import Fragment
from shared.ledger.llm import (
    AnswerInvalid,
    Checked,
    Settings,
    Usage,
    cache_key,
    check_claim,
    parse_answer,
    prompt_for,
)
from shared.ledger.merge import Provenance, Transaction
from shared.ledger.reconstruct import LedgerResult
from shared.ledger.values import format_decimal, iso_utc

Ask = Callable[[list[dict[str, str]]], tuple[str, dict[str, int]]]

MAX_CANDIDATES = 40
TYPE_WORDS = {
    "deposit": ("deposit", "received", "funded", "sent in", "transferred in"),
    "withdrawal": ("withdr", "took out", "sent out", "cashed out", "moved out", "transferred out"),
    "trade": ("bought", "sold", "buy", "sell", "traded", "swapped"),
    "transfer": ("transfer", "moved"),
    "fee": ("fee",),
    "funding": ("funding",),
}


def _candidates(result: LedgerResult, account: str) -> dict[str, dict[str, Any]]:
    txs = [t for t in result.transactions if t.account == account and t.type != "transfer"]
    txs = txs[:MAX_CANDIDATES]
    return {
        t.id: {
            "id": t.id,
            "type": t.type,
            "time": t.values.get("time"),
            "asset": t.values.get("asset"),
            "amount": t.values.get("amount"),
            "time_us": t.time_us,
        }
        for t in txs
    }


class Cache:
    """Answers on disk by the SHA-256 of model, prompt and schema."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, key[:2], key + ".json")

    def get(self, key: str) -> str | None:
        try:
            with open(self._path(key), "rb") as fh:
                return str(orjson.loads(fh.read())["content"])
        except (OSError, ValueError, KeyError):
            return None

    def put(self, key: str, content: str) -> None:
        path = self._path(key)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(orjson.dumps({"content": content}))
            os.replace(tmp, path)
        except OSError:
            pass  # a cache that cannot be written costs a request next time, nothing else


def resolve_notes(result: LedgerResult, settings: Settings, ask: Ask, usage: Usage) -> None:
    """Send every note to the LLM (through the cache), apply the claims that hold, and leave the
    rest in ``result.unresolved`` with their reasons.  Updates ``result`` in place."""
    cache = Cache(settings.cache_dir)
    resolved: set[str] = set()
    extra: list[dict[str, Any]] = []
    for note in sorted(result.notes, key=lambda n: n.id):
        known = _candidates(result, note.account)
        listed = [{k: v for k, v in c.items() if k != "time_us"} for c in known.values()]
        messages = prompt_for(note.text or "", listed)
        try:
            claims = _claims(messages, settings, ask, cache, usage)
        except AnswerInvalid as exc:
            extra.append(_unresolved(note, f"the LLM's answer was invalid twice: {exc}"))
            continue
        except RetapeError as exc:  # the endpoint failed (down, refused the key, kept limiting)
            extra.append(_unresolved(note, f"the LLM endpoint failed: {exc}"))
            continue
        if not claims:
            extra.append(_unresolved(note, "the LLM found no transaction in it"))
            continue
        ok_any = False
        for n, claim in enumerate(claims):
            checked = check_claim(claim, note.text or "", known)
            if checked.ok and not claim["matches"]:
                checked = _states_it(checked, note)
            if not checked.ok:
                usage.rejected += 1
                extra.append(_unresolved(note, f"LLM claim rejected: {checked.reason}", claim))
                continue
            ok_any = True
            _apply(result, note, checked, n, settings.model)
        if ok_any:
            resolved.add(note.id)
    result.unresolved = [
        u for u in result.unresolved if not (u["kind"] == "note" and u["fragments"][0] in resolved)
    ]
    result.unresolved = [u for u in result.unresolved if u["kind"] != "note"] + extra
    result.unresolved.sort(key=lambda u: (str(u.get("account")), u["kind"], u["fragments"]))
    result.transactions.sort(key=lambda t: (t.account, t.time_us if t.time_us is not None else -1, t.id))
    result.balances = balances(result.transactions, result.cutoff_us)


def _claims(
    messages: list[dict[str, str]], settings: Settings, ask: Ask, cache: Cache, usage: Usage
) -> list[dict[str, Any]]:
    content = _ask_cached(messages, settings, ask, cache, usage)
    try:
        return parse_answer(content)
    except AnswerInvalid as exc:
        usage.repairs += 1
        repair = [
            *messages,
            {"role": "assistant", "content": content[:4000]},
            {
                "role": "user",
                "content": f"That answer is invalid ({exc}). Answer again with JSON matching the schema.",
            },
        ]
        return parse_answer(_ask_cached(repair, settings, ask, cache, usage))


def _ask_cached(
    messages: list[dict[str, str]], settings: Settings, ask: Ask, cache: Cache, usage: Usage
) -> str:
    key = cache_key(settings.model, messages)
    hit = cache.get(key)
    if hit is not None:
        usage.cached += 1
        return hit
    content, tokens = ask(messages)
    usage.requests += 1
    usage.prompt_tokens += tokens.get("prompt", 0)
    usage.completion_tokens += tokens.get("completion", 0)
    usage.cost += (
        Decimal(tokens.get("prompt", 0)) * settings.price_in
        + Decimal(tokens.get("completion", 0)) * settings.price_out
    ) / Decimal(1_000_000)
    cache.put(key, content)
    return content


def _states_it(checked: Checked, note: Fragment) -> Checked:
    """A transaction the fragments do not hold may come only from a note that says so: with a
    word of its type and a day."""
    text = (note.text or "").lower()
    kind = checked.claim["type"]
    if not any(w in text for w in TYPE_WORDS.get(kind, ())):
        checked.ok, checked.reason = False, f"the note states no {kind}"
    elif checked.time_us is None:
        checked.ok, checked.reason = (
            False,
            "a transaction the fragments do not hold needs a time the note names",
        )
    elif checked.amount is None or checked.asset is None:
        checked.ok, checked.reason = (
            False,
            "a transaction the fragments do not hold needs its asset and amount",
        )
    return checked


def _apply(result: LedgerResult, note: Fragment, checked: Checked, n: int, model: str) -> None:
    claim = checked.claim
    conf = float(claim["confidence"])
    if claim["matches"]:
        tx = next(t for t in result.transactions if t.id == claim["matches"])
        tx.fragments = sorted({*tx.fragments, note.id})
        for name, value in (
            ("asset", checked.asset),
            ("time", _iso(checked.time_us)),
            ("amount", _dec(checked.amount)),
        ):
            if value is not None and name not in tx.values:
                tx.values[name] = value
                tx.provenance[name] = Provenance("llm", min(conf, 0.8), [note.id])
        return
    kind = claim["type"]
    sign = Decimal(-1) if kind == "withdrawal" else Decimal(1)
    amount = abs(checked.amount) * sign if checked.amount is not None else None
    ident = hashlib.sha256(f"{note.id}:{n}:{model}".encode()).hexdigest()[:12]
    tx = Transaction(f"{kind}:llm-{ident}", note.account, kind)
    tx.fragments = [note.id]
    tx.time_us = checked.time_us
    for name, value in (("time", _iso(checked.time_us)), ("asset", checked.asset), ("amount", _dec(amount))):
        if value is not None:
            tx.values[name] = value + (
                "?"
                if name == "amount" and re.search(r"\b(about|around|roughly|~)", (note.text or "").lower())
                else ""
            )
            tx.provenance[name] = Provenance("llm", min(conf, 0.5), [note.id])
    result.transactions.append(tx)


def _iso(us: int | None) -> str | None:
    return None if us is None else iso_utc(us)


def _dec(d: Decimal | None) -> str | None:
    return None if d is None else format_decimal(d)


def _unresolved(note: Fragment, reason: str, claim: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": "note",
        "account": note.account,
        "fragments": [note.id],
        "text": note.text,
        "reason": reason,
    }
    if claim is not None:
        out["claim"] = claim
    return out
