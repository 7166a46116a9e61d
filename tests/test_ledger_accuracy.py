"""The deterministic ledger measured against the truth it was generated from (tests/ledger_gen.py,
real FTX trades): recoverable fields right, no wrong value claiming to be observed or sure,
no phantom transaction, and confidence that means something (a calibration table)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.ledger.reconstruct import reconstruct
from tests.ledger_gen import generate, score


def evaluate(tmp: Path, seed: int, conflicts: float = 0.0) -> dict[str, Any]:
    truth, files, origin = generate(seed, conflicts=conflicts)
    for rel, data in files.items():
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return score(reconstruct([str(tmp)], 2**62), truth, origin)


@pytest.mark.parametrize(("seed", "conflicts"), [(7, 0.0), (11, 0.0), (2022, 0.0), (7, 0.3), (11, 0.3)])
def test_the_deterministic_stage_on_generated_sets(tmp_path: Path, seed: int, conflicts: float) -> None:
    r = evaluate(tmp_path, seed, conflicts)
    print(
        f"\nseed {seed}, conflicts {conflicts}: {r['truth']} true transactions, "
        f"{r['transactions']} rebuilt; fields right "
        f"{r['right']}/{r['right'] + r['wrong']}; calibration (confidence: right, wrong):"
    )
    for band, (ok, bad) in r["calibration"].items():
        print(f"  {band}: {ok} right, {bad} wrong")
    assert r["truth"] > 150
    assert not r["phantoms"] and not r["merged"] and not r["split"] and not r["missing"], r
    assert r["right"] / (r["right"] + r["wrong"]) >= 0.99
    assert r["sure_and_wrong"] == []
    # Higher confidence is right more often.
    rates = [ok / (ok + bad) for (ok, bad) in r["calibration"].values() if ok + bad >= 5]
    assert rates == sorted(rates, reverse=True)
