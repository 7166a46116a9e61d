"""Benchmark: what the ledger's confidence means, measured on generated fragment sets.

Each set is generated from a known ledger (``tests/ledger_gen.py``: real FTX trades, deposits,
withdrawals, funding, written by several systems with ids cut short, amounts marked uncertain,
other zones, and with ``--conflicts`` of the trades also in an older export with one value
mistyped).  The deterministic ledger is rebuilt and every field compared with the truth.
Printed, pooled over the seeds: per confidence band of report.json's ``fields_by_confidence``,
how many fields were right; and the share of recoverable fields right (target: 99 %).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 11, 2022, 31, 59])
    parser.add_argument("--conflicts", type=float, default=0.3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from shared.ledger.outputs import CONFIDENCE_BANDS
    from shared.ledger.reconstruct import reconstruct
    from tests.ledger_gen import generate, score

    bands = {label: [0, 0] for label, _, _ in CONFIDENCE_BANDS}
    right = wrong = truths = phantoms = 0
    for seed in args.seeds:
        truth, files, origin = generate(seed, conflicts=args.conflicts)
        with tempfile.TemporaryDirectory() as tmp:
            for rel, data in files.items():
                path = Path(tmp) / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            r = score(reconstruct([tmp], 2**62), truth, origin)
        truths += r["truth"]
        phantoms += len(r["phantoms"])
        right += r["right"]
        wrong += r["wrong"]
        for label, (ok, bad) in r["calibration"].items():
            bands[label][0] += ok
            bands[label][1] += bad
    print(
        f"ledger calibration: {len(args.seeds)} generated sets, {truths} true transactions, "
        f"{args.conflicts:.0%} of trades in two disagreeing exports; phantom transactions: {phantoms}"
    )
    print(f"  recoverable fields right: {right}/{right + wrong} ({right / max(right + wrong, 1):.2%})")
    print("  confidence band   fields   right")
    for label, (ok, bad) in bands.items():
        share = f"{ok / (ok + bad):.1%}" if ok + bad else "-"
        print(f"  {label:<16} {ok + bad:>7}   {share:>6}")


if __name__ == "__main__":
    main()
