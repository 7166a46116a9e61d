"""The LLM stage on generated sets where some deposits and withdrawals are known only from notes
("Took out about 0.3 ETH on Jul 5, around 2pm") and others are also in a note beside their
records.  The model is an oracle that reads the truth and answers as a good model would, except
that a quarter of its answers lie in one of the ways models do (a wrong amount, a wrong day, a
link to the wrong transaction, an asset the note never names).  What must hold:

- every honest answer is applied: note-only transactions are added (``llm``, at most 0.5), notes
  about recorded transactions are linked, never counted twice;
- every lie is rejected with its reason and the note stays unresolved;
- no phantom, merged or split transaction; recoverable values right; none wrong and sure.
"""

from __future__ import annotations

import json
import random
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shared.ledger.llm import Settings, Usage, rounds_to
from shared.ledger.llm_stage import resolve_notes
from shared.ledger.reconstruct import reconstruct
from tests.ledger_gen import Truth, generate, score

LIES = ("amount", "day", "link", "asset")


class Oracle:
    def __init__(
        self, truth: list[Truth], files: dict[str, bytes], origin: dict[str, str], seed: int
    ) -> None:
        by_id = {t.id: t for t in truth}
        self.by_note: dict[tuple[str, str], Truth] = {}
        for rel, data in files.items():
            if rel.endswith("notes.txt"):
                account = rel.split("/")[0]
                for n, text in enumerate(data.decode().strip().split("\n\n")):
                    self.by_note[(account, text)] = by_id[origin[f"{rel}:{2 * n + 1}"]]
        self.rng = random.Random(seed)
        self.lies: dict[str, str] = {}  # note text -> how the answer lied
        self.requests = 0

    def __call__(self, messages: list[dict[str, str]]) -> tuple[str, dict[str, int]]:
        self.requests += 1
        data = json.loads(messages[1]["content"])
        note, known = data["note"], data["known_transactions"]
        t = next(t for (_, text), t in self.by_note.items() if text == note)
        claim = self.honest(t, note, known)
        if self.rng.random() < 0.25:
            how = self.rng.choice(LIES)
            claim = self.lie(claim, how, known)
            self.lies[note] = how
        return json.dumps({"claims": [claim]}), {"prompt": 200, "completion": 40}

    @staticmethod
    def honest(t: Truth, note: str, known: list[dict[str, Any]]) -> dict[str, Any]:
        written = re.search(r"(\d[\d,]*(?:\.\d+)?) [A-Z]{3}", note)
        assert written is not None, note
        amount = written.group(1).replace(",", "")
        day = t.value("time")[:10]  # type: ignore[index]
        hour = int(t.value("time")[11:13])  # type: ignore[index]
        # Link the recorded transaction of that type, asset and day with that amount (or, where
        # the note says "about", one that rounds to it: a record may hold it rounded, "0.9?").
        written_amount = Decimal(amount)
        same = [
            k
            for k in known
            if k["type"] == t.type
            and k["asset"] == t.asset
            and k["amount"] is not None
            and (k["time"] or "")[:10] == day
            and (
                abs(Decimal(k["amount"].rstrip("?"))) == written_amount
                or ("about" in note and rounds_to(written_amount, Decimal(k["amount"].rstrip("?"))))
            )
        ]
        matches = same[0]["id"] if same else None
        return {
            "type": t.type,
            "asset": t.asset,
            "amount": ("-" if t.type == "withdrawal" else "") + amount,
            "time": f"{day}T{hour:02d}:00:00Z",
            "matches": matches,
            "confidence": 0.8,
        }

    def lie(self, claim: dict[str, Any], how: str, known: list[dict[str, Any]]) -> dict[str, Any]:
        claim = dict(claim)
        if how == "amount":
            claim["amount"] = str(Decimal(claim["amount"]) * 10 + 1)
        elif how == "day":
            day = int(claim["time"][8:10])
            claim["time"] = claim["time"][:8] + f"{(day + 9) % 28 + 1:02d}" + claim["time"][10:]
        elif how == "asset":
            claim["asset"] = "DOGE"
        else:
            others = [k for k in known if k["id"] != claim["matches"] and k["type"] == "trade"]
            claim["matches"] = others[0]["id"]
        return claim


@pytest.mark.parametrize("seed", [7, 2022])
def test_the_llm_stage_on_generated_notes(tmp_path: Path, seed: int) -> None:
    truth, files, origin = generate(seed, accounts=10, notes=0.35)
    for rel, data in files.items():
        path = tmp_path / "in" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    result = reconstruct([str(tmp_path / "in")], 2**62)
    oracle = Oracle(truth, files, origin, seed)
    settings = Settings("http://127.0.0.1:9/v1", "oracle", None, cache_dir=str(tmp_path / "cache"))
    usage = Usage()
    resolve_notes(result, settings, oracle, usage)

    notes = len(oracle.by_note)
    only = [t for t in truth if t.only_noted]
    assert notes >= 25 and len(only) >= 10 and len(oracle.lies) >= 4
    assert usage.requests == notes and usage.rejected == len(oracle.lies)
    unresolved = {u["text"]: u for u in result.unresolved if u["kind"] == "note"}
    assert set(unresolved) == set(oracle.lies), "every lie rejected, every honest answer applied"
    assert all(u["reason"].startswith("LLM claim rejected: ") for u in unresolved.values())

    r = score(result, truth, origin)
    lied_about = {t.id for (_, text), t in oracle.by_note.items() if text in oracle.lies}
    assert not r["phantoms"] and not r["merged"] and not r["split"], r
    assert set(r["missing"]) == {t.id for t in only if t.id in lied_about}
    assert r["wrong"] == 0 and r["sure_and_wrong"] == []
    added = [t for t in result.transactions if t.id.split(":")[1].startswith("llm-")]
    assert len(added) == len([t for t in only if t.id not in lied_about])
    for tx in added:
        assert {p.source for p in tx.provenance.values()} == {"llm"}
        assert max(p.confidence for p in tx.provenance.values()) <= 0.5
        assert all(p.model == "oracle" and p.prompt for p in tx.provenance.values())
    print(
        f"\nseed {seed}: {notes} notes ({len(only)} about transactions in no record); "
        f"{len(oracle.lies)} lying answers, all rejected; {len(added)} transactions added from notes, "
        f"{len(result.links)} notes linked; recoverable fields right {r['right']}/{r['right'] + r['wrong']}"
    )

    # A second pass over the same ledger answers from the cache: no request, the same result.
    again = reconstruct([str(tmp_path / "in")], 2**62)
    resolve_notes(again, settings, oracle, Usage())
    assert oracle.requests == notes
    assert [t.as_json() for t in again.transactions] == [t.as_json() for t in result.transactions]
