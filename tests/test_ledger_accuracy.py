"""The deterministic ledger measured against the truth it was generated from (tests/ledger_gen.py,
real FTX trades): recoverable fields right, no wrong value claiming to be observed or sure,
no phantom transaction, and confidence that means something (a calibration table)."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from shared.ledger.merge import FIELDS
from shared.ledger.reconstruct import reconstruct
from tests.ledger_gen import Truth, generate

BUCKETS = ((1.0, 1.01), (0.9, 1.0), (0.7, 0.9), (0.0, 0.7))


def _same_second(got: Any, want: str) -> bool:
    """A time written to the second (a tax tool's) is right when it is the true time cut there."""
    return isinstance(got, str) and got.endswith(".000000Z") and got[:19] == want[:19]


def evaluate(tmp: Path, seed: int) -> dict[str, Any]:
    truth, files, origin = generate(seed)
    for rel, data in files.items():
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    result = reconstruct([str(tmp)], 2**62)
    by_id = {t.id: t for t in truth}
    phantoms: list[str] = []
    merged: list[str] = []
    found: Counter[str] = Counter()
    right = wrong = 0
    sure_and_wrong: list[tuple[str, str, Any, Any]] = []
    calibration: dict[tuple[float, float], list[int]] = defaultdict(lambda: [0, 0])
    for tx in result.transactions:
        sources = {origin.get(f) for f in tx.fragments}
        if None in sources or not sources:
            phantoms.append(tx.id)
            continue
        if len(sources) > 1:
            merged.append(tx.id)
            continue
        (tid,) = sources
        assert tid is not None
        if tx.type == "transfer":
            continue  # an unmatched chain record: listed as unresolved, in no balance
        found[tid] += 1
        t: Truth = by_id[tid]
        for name in FIELDS:
            want = t.value(name)
            got = tx.values.get(name)
            if want is None or got is None:
                continue
            ok = got.rstrip("?") == want or (name == "time" and _same_second(got, want))
            if name in t.written:  # recoverable: the true value is in some fragment
                right += ok
                wrong += not ok
            p = tx.provenance[name]
            for lo, hi in BUCKETS:
                if lo <= p.confidence < hi:
                    calibration[(lo, hi)][0 if ok else 1] += 1
            # A value every source marked uncertain says so ("1.2?"): it claims no exactness.
            claims = not str(got).endswith("?")
            if not ok and claims and (p.source == "observed" or p.confidence > 0.9):
                sure_and_wrong.append((tx.id, name, got, want))
    return {
        "truth": len(truth),
        "transactions": len(result.transactions),
        "phantoms": phantoms,
        "merged": merged,
        "split": sorted(k for k, n in found.items() if n > 1),
        "missing": sorted(t.id for t in truth if found[t.id] == 0),
        "right": right,
        "wrong": wrong,
        "sure_and_wrong": sure_and_wrong,
        "calibration": {k: tuple(v) for k, v in sorted(calibration.items(), reverse=True)},
    }


@pytest.mark.parametrize("seed", [7, 11, 2022])
def test_the_deterministic_stage_on_generated_sets(tmp_path: Path, seed: int) -> None:
    r = evaluate(tmp_path, seed)
    print(
        f"\nseed {seed}: {r['truth']} true transactions, {r['transactions']} rebuilt; fields right "
        f"{r['right']}/{r['right'] + r['wrong']}; calibration (confidence: right, wrong):"
    )
    for (lo, hi), (ok, bad) in r["calibration"].items():
        print(f"  [{lo:.2f}, {min(hi, 1.0):.2f}{']' if hi > 1 else ')'}: {ok} right, {bad} wrong")
    assert r["truth"] > 150
    assert not r["phantoms"] and not r["merged"] and not r["split"] and not r["missing"], r
    assert r["right"] / (r["right"] + r["wrong"]) >= 0.99
    assert r["sure_and_wrong"] == []
    # Higher confidence is right more often.
    rates = [ok / (ok + bad) for (ok, bad) in r["calibration"].values() if ok + bad >= 5]
    assert rates == sorted(rates, reverse=True)
