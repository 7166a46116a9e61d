"""Deployment files parse and name what the code provides (no Docker engine runs here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import yaml

from producers.cli import build_parser

ROOT = Path(__file__).parent.parent


def test_compose_file_parses_and_runs_a_real_command() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    audit = compose["services"]["audit"]
    assert audit["build"] == "."
    args = build_parser().parse_args(audit["command"])  # the command is one the CLI accepts
    assert args.command == "audit" and args.out == "/out"
    assert any(v.endswith(":/data:ro") for v in audit["volumes"])


def test_dockerfile_installs_the_locked_dependencies_and_the_command() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r requirements.lock" in text
    for package in ("shared", "producers", "workers"):
        assert f"COPY {package} ./{package}" in text
    assert 'ENTRYPOINT ["retape"]' in text


def test_crontab_runs_the_nightly_script_which_audits_a_day(tmp_path: Path) -> None:
    jobs = [
        line
        for line in (ROOT / "ops" / "crontab").read_text().splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert jobs and all(job.split(None, 5)[5].startswith("/opt/retape/ops/nightly-audit.sh") for job in jobs)
    day = tmp_path / "landing" / "2024-08-08"
    day.mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "data" / "hftbacktest" / "spot" / "btcusdt_20240808.gz", day)
    env = {
        **os.environ,
        "RETAPE_HOME": str(ROOT),
        "LANDING": str(tmp_path / "landing"),
        "REPORTS": str(tmp_path / "reports"),
    }
    proc = subprocess.run(
        [str(ROOT / "ops" / "nightly-audit.sh"), "2024-08-08"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "reports" / "2024-08-08" / "report.json").read_text())
    assert any(s["channel"] == "book" and s["faults"]["gap"] == 0 for s in report["streams"])
