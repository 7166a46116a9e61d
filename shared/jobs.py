"""Jobs: a plan with an id that depends only on what is audited and how.

Pure: turning a plan into JSON and back, and the job id.  Submitting and running live in
``producers`` and ``workers``.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from typing import Any

import orjson

from shared.auditors import AuditConfig
from shared.planning import InputSummary, Plan


def job_id(job: Plan, cfg: AuditConfig, out_dir: str) -> str:
    """Same inputs (by content), options and output directory, same id: a second submission
    is the same job."""
    basis = {
        "inputs": sorted([i.path, i.sha256] for i in job.inputs),
        "config": asdict(cfg),
        "out": out_dir,
    }
    return hashlib.sha256(orjson.dumps(basis, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def plan_to_json(job: Plan, cfg: AuditConfig, out_dir: str) -> bytes:
    return orjson.dumps(
        {
            "inputs": [i.as_json() for i in job.inputs],
            "formats": job.formats,
            "segments": job.segments,
            "config": asdict(cfg),
            "out": out_dir,
        }
    )


def plan_from_json(raw: bytes | str) -> tuple[Plan, AuditConfig, str]:
    data: dict[str, Any] = orjson.loads(raw)
    job = Plan([InputSummary.from_json(i) for i in data["inputs"]], data["formats"], data["segments"])
    return job, AuditConfig(**data["config"]), data["out"]
