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
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from shared.errors import RetapeError
from shared.ledger.balances import balances, ledger_decimal
from shared.ledger.fragments import Fragment
from shared.ledger.llm import (
    AnswerInvalid,
    Checked,
    Settings,
    Usage,
    cache_key,
    check_claim,
    days_named,
    numbers_in,
    parse_answer,
    prompt_for,
    roughly,
    rounds_to,
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


def _relevance(tx: Transaction, text: str, numbers: set[Decimal], days: set[int]) -> int:
    """How much a note seems to speak of ``tx``: its amount written, its asset named, its day
    named, a word of its type."""
    score = 0
    amount = ledger_decimal(tx.values.get("amount"))
    if amount is not None and abs(amount) in numbers:
        score += 4
    asset = tx.values.get("asset")
    if asset and re.search(rf"(?<![a-z]){re.escape(str(asset).lower())}(?![a-z])", text):
        score += 2
    time = tx.values.get("time")
    if time and int(str(time)[8:10]) in days:
        score += 1
    if any(w in text for w in TYPE_WORDS.get(tx.type, ())):
        score += 1
    return score


def _candidates(result: LedgerResult, note: Fragment) -> dict[str, dict[str, Any]]:
    """The account's transactions a note most likely speaks of (at most MAX_CANDIDATES, the
    most relevant first, then by time): what the LLM may link it to."""
    text = (note.text or "").lower()
    numbers = numbers_in(text)
    days = days_named(text)
    txs = [t for t in result.transactions if t.account == note.account and t.type != "transfer"]
    ranked = sorted(enumerate(txs), key=lambda it: (-_relevance(it[1], text, numbers, days), it[0]))
    chosen = sorted(ranked[:MAX_CANDIDATES], key=lambda it: it[0])
    return {
        t.id: {
            "id": t.id,
            "type": t.type,
            "time": t.values.get("time"),
            "asset": t.values.get("asset"),
            "amount": t.values.get("amount"),
            "time_us": t.time_us,
        }
        for _, t in chosen
    }


def _already_held(result: LedgerResult, note: Fragment, checked: Checked) -> str:
    """The id of a transaction the ledger holds that a new claim would count again (same
    account, type and asset, the same amount or one that rounds to it where the note says
    "about", the same day when the claim has a time); empty if none."""
    kind = checked.claim["type"]
    for tx in result.transactions:
        if tx.account != note.account or tx.type != kind or tx.values.get("asset") != checked.asset:
            continue
        amount = ledger_decimal(tx.values.get("amount"))
        if amount is None or checked.amount is None:
            continue
        if abs(amount) != abs(checked.amount) and not (
            roughly(note.text or "") and rounds_to(checked.amount, amount)
        ):
            continue
        other_day = (
            checked.time_us is not None
            and tx.time_us is not None
            and iso_utc(tx.time_us)[:10] != iso_utc(checked.time_us)[:10]
        )
        if not other_day:
            return tx.id
    return ""


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


@dataclass(frozen=True, slots=True)
class Question:
    """What the LLM is asked about one note: the messages (the note quoted, the account's known
    transactions) and the transactions a claim may match."""

    note: str  # the note's fragment id
    messages: list[dict[str, str]]
    # The transactions the messages offer, by id (with ``time_us``): what a claim may link.
    # Not sent to a sub-task (it needs only the messages); the stage that applies the answers
    # asks the same questions again of the same ledger.
    known: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)

    def as_json(self) -> dict[str, Any]:
        return {"note": self.note, "messages": self.messages}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Question:
        return cls(str(data["note"]), [dict(m) for m in data["messages"]])


@dataclass(slots=True)
class Reply:
    """The claims the LLM made about one note, or why there are none usable; and what asking
    cost this run (requests sent, answers read from the cache, tokens of the sent ones)."""

    claims: list[dict[str, Any]] | None = None
    error: str | None = None
    sent: int = 0
    cached: int = 0
    repairs: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "claims": self.claims,
                "error": self.error,
                "sent": self.sent,
                "cached": self.cached,
                "repairs": self.repairs,
                "tokens": [self.prompt_tokens, self.completion_tokens],
            },
            option=orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def decode(cls, raw: bytes) -> Reply:
        d = orjson.loads(raw)
        prompt, completion = d["tokens"]
        return cls(d["claims"], d["error"], d["sent"], d["cached"], d["repairs"], prompt, completion)


def questions(result: LedgerResult) -> list[Question]:
    """One question per note, in note order, about the deterministic ledger (so no answer
    depends on another one's)."""
    out = []
    for note in sorted(result.notes, key=lambda n: n.id):
        known = _candidates(result, note)
        listed = [{k: v for k, v in c.items() if k != "time_us"} for c in known.values()]
        out.append(Question(note.id, prompt_for(note.text or "", listed), known))
    return out


def answer(question: Question, settings: Settings, ask: Ask, cache: Cache) -> Reply:
    """Ask about one note (through the cache), with one repair of an invalid answer."""
    reply = Reply()
    try:
        reply.claims = _claims(question.messages, settings, ask, cache, reply)
    except AnswerInvalid as exc:
        reply.error = f"the LLM's answer was invalid twice: {exc}"
    except RetapeError as exc:  # the endpoint failed (down, refused the key, kept limiting)
        reply.error = f"the LLM endpoint failed: {exc}"
    return reply


def apply_replies(
    result: LedgerResult, asked: list[Question], replies: list[Reply], settings: Settings, usage: Usage
) -> None:
    """Check every claim against its note, apply what holds, leave the rest in
    ``result.unresolved`` with their reasons; count the usage.  Updates ``result`` in place,
    the same whatever order the replies came in."""
    notes = {n.id: n for n in result.notes}
    extra: list[dict[str, Any]] = []
    for question, reply in zip(asked, replies, strict=True):
        note = notes[question.note]
        usage.requests += reply.sent
        usage.cached += reply.cached
        usage.repairs += reply.repairs
        usage.prompt_tokens += reply.prompt_tokens
        usage.completion_tokens += reply.completion_tokens
        usage.cost += (
            Decimal(reply.prompt_tokens) * settings.price_in
            + Decimal(reply.completion_tokens) * settings.price_out
        ) / Decimal(1_000_000)
        if reply.error is not None:
            extra.append(_unresolved(note, reply.error))
            continue
        if not reply.claims:
            extra.append(_unresolved(note, "the LLM found no transaction in it"))
            continue
        known = question.known  # what it offered, before any answer changed the ledger
        prompt = cache_key(settings.model, question.messages)
        for n, claim in enumerate(reply.claims):
            checked = check_claim(claim, note.text or "", known)
            if checked.ok and not claim["matches"]:
                checked = _states_it(checked, note)
                held = _already_held(result, note, checked) if checked.ok else ""
                if held:
                    checked.ok, checked.reason = (
                        False,
                        f"the fragments hold it already ({held}): not counted twice",
                    )
            if not checked.ok:
                usage.rejected += 1
                extra.append(_unresolved(note, f"LLM claim rejected: {checked.reason}", claim))
                continue
            _apply(result, note, checked, n, settings.model, prompt)
    result.unresolved = [u for u in result.unresolved if u["kind"] != "note"] + extra
    result.unresolved.sort(key=lambda u: (str(u.get("account")), u["kind"], u["fragments"]))
    result.transactions.sort(key=lambda t: (t.account, t.time_us if t.time_us is not None else -1, t.id))
    result.links.sort(key=lambda link: (link["note"], link["transaction"]))
    result.balances = balances(result.transactions, result.cutoff_us)


def resolve_notes(result: LedgerResult, settings: Settings, ask: Ask, usage: Usage) -> None:
    """Send every note to the LLM (through the cache), one after the other, and apply what
    holds (the ``ledger`` job asks the same questions as ``llm`` sub-tasks in parallel)."""
    cache = Cache(settings.cache_dir)
    asked = questions(result)
    apply_replies(result, asked, [answer(q, settings, ask, cache) for q in asked], settings, usage)


def _claims(
    messages: list[dict[str, str]], settings: Settings, ask: Ask, cache: Cache, reply: Reply
) -> list[dict[str, Any]]:
    content = _ask_cached(messages, settings, ask, cache, reply)
    try:
        return parse_answer(content)
    except AnswerInvalid as exc:
        reply.repairs += 1
        repair = [
            *messages,
            {"role": "assistant", "content": content[:4000]},
            {
                "role": "user",
                "content": f"That answer is invalid ({exc}). Answer again with JSON matching the schema.",
            },
        ]
        return parse_answer(_ask_cached(repair, settings, ask, cache, reply))


def _ask_cached(
    messages: list[dict[str, str]], settings: Settings, ask: Ask, cache: Cache, reply: Reply
) -> str:
    key = cache_key(settings.model, messages)
    hit = cache.get(key)
    if hit is not None:
        reply.cached += 1
        return hit
    content, tokens = ask(messages)
    reply.sent += 1
    reply.prompt_tokens += tokens.get("prompt", 0)
    reply.completion_tokens += tokens.get("completion", 0)
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


def _apply(result: LedgerResult, note: Fragment, checked: Checked, n: int, model: str, prompt: str) -> None:
    claim = checked.claim
    conf = float(claim["confidence"])
    if claim["matches"]:
        tx = next(t for t in result.transactions if t.id == claim["matches"])
        tx.fragments = sorted({*tx.fragments, note.id})
        result.links.append(
            {
                "note": note.id,
                "transaction": tx.id,
                "model": model,
                "prompt_sha256": prompt,
                "confidence": min(conf, 0.8),
            }
        )
        for name, value in (
            ("asset", checked.asset),
            ("time", _iso(checked.time_us)),
            ("amount", _dec(checked.amount)),
        ):
            if value is not None and name not in tx.values:
                tx.values[name] = value
                tx.provenance[name] = Provenance("llm", min(conf, 0.8), [note.id], model, prompt)
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
            tx.provenance[name] = Provenance("llm", min(conf, 0.5), [note.id], model, prompt)
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
