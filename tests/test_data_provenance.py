"""Every bundled capture says where it came from, and is the file that line describes."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

DATA = Path(__file__).parent / "data"


def test_every_data_file_has_a_provenance_line_with_its_hash() -> None:
    text = (DATA / "PROVENANCE.md").read_text()
    rows = {
        line.split("|")[1].strip().strip("`"): line for line in text.splitlines() if line.startswith("| `")
    }
    files = sorted(
        str(p.relative_to(DATA)) for p in DATA.rglob("*") if p.is_file() and p.name != "PROVENANCE.md"
    )
    assert files and sorted(rows) == files
    for rel in files:
        sha = hashlib.sha256((DATA / rel).read_bytes()).hexdigest()
        assert f"`{sha[:16]}…`" in rows[rel], rel
        assert re.search(r"`[0-9a-f]{40}`", rows[rel]), rel  # the source commit
        assert any(lic in rows[rel] for lic in ("MIT", "LGPL-3.0", "XFree86")), rel
