"""Deployment files parse and name what the code provides (no Docker engine runs here)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from producers.cli import build_parser
from producers.feeder import BLOCK_SIZE, WINDOW_BLOCKS
from shared.metrics import METRICS
from shared.queues import ALL_QUEUES, parse_queues

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


# --- the compose stack, KEDA, alert rules and runbook (names checked against the code) ---

COMPOSE = ROOT / "docker-compose.yml"
RUNBOOK = ROOT / "ops" / "runbook.md"
ENV = {"REDIS_PASSWORD": "s3cret", "FLOWER_USER": "ops", "FLOWER_PASSWORD": "pw"}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _interpolate(value: str, env: dict[str, str]) -> str:
    """What Compose does to a value: ${VAR}, ${VAR:-default}, ${VAR:?error}; $$ is a literal $."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.groups()
        if env.get(name):
            return env[name]
        assert op not in (":?", "?"), f"{name} is required ({arg}) and unset"
        return arg if op in (":-", "-") else ""

    return _VAR.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


def _resolved(node: Any, env: dict[str, str] = ENV) -> Any:
    if isinstance(node, str):
        return _interpolate(node, env)
    if isinstance(node, list):
        return [_resolved(v, env) for v in node]
    if isinstance(node, dict):
        return {k: _resolved(v, env) for k, v in node.items()}
    return node


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _workers(services: dict[str, Any]) -> dict[str, str]:
    """Queue -> the service whose command is `retape worker` on it (asserting one each)."""
    found: dict[str, list[str]] = {}
    for name, svc in services.items():
        command = _resolved(svc.get("command") or [])
        if svc.get("entrypoint") is None and command[:1] == ["worker"]:
            args = build_parser().parse_args(command)
            queues = parse_queues(args.queues)
            assert len(queues) == 1, f"{name} serves {queues}: one pool per queue"
            found.setdefault(queues[0], []).append(name)
    assert set(found) == set(ALL_QUEUES)
    assert all(len(names) == 1 for names in found.values()), found
    return {q: names[0] for q, names in found.items()}


def _mounts(svc: dict[str, Any]) -> dict[str, str]:
    """Container path -> 'source[:mode]' of a service's bind mounts, defaults resolved."""
    out = {}
    for spec in _resolved(svc.get("volumes", [])):
        source, target, *mode = spec.split(":")
        out[target] = ":".join([source, *mode])
    return out


def test_compose_variables_are_documented_and_container_variables_escaped() -> None:
    text = COMPOSE.read_text()
    compose = _compose()
    assert "version" not in compose  # the Compose spec has none
    # a bare $NAME would be interpolated by Compose on the host: container variables are $$NAME
    assert not re.search(r"\$(?![{$])", text.replace("$$", ""))
    used = {m.group(1) for m in _VAR.finditer(text)}
    required = {m.group(1) for m in _VAR.finditer(text) if m.group(2) in (":?", "?")}
    assert required == {"REDIS_PASSWORD", "FLOWER_USER", "FLOWER_PASSWORD"}
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, re.M))
    assert used <= documented, used - documented
    # secrets are not given a value in the example
    assert re.search(r"^REDIS_PASSWORD=$", example, re.M) and re.search(r"^FLOWER_PASSWORD=$", example, re.M)
    with pytest.raises(AssertionError, match="REDIS_PASSWORD is required"):
        _resolved(compose["services"]["redis"]["command"], {})


def test_every_queue_has_one_scalable_worker_pool_with_a_real_command() -> None:
    services = _compose()["services"]
    pools = _workers(services)
    defaults = {"book": 2, "replay": 1, "llm": 1, "ledger": 1, "aggregate": 1}
    for queue, name in pools.items():
        svc = services[name]
        assert name == f"worker-{queue}"
        args = build_parser().parse_args(_resolved(svc["command"]))
        assert args.command == "worker" and args.concurrency == defaults[queue]
        assert "container_name" not in svc  # `docker compose up --scale` needs generated names
        assert svc["restart"] == "unless-stopped"
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert re.fullmatch(r"\d+[ms]", svc["stop_grace_period"])
        url = urlsplit(_resolved(svc["environment"])["REDIS_URL"])
        assert (url.scheme, url.password, url.hostname, url.port, url.path) == (
            "redis",
            ENV["REDIS_PASSWORD"],
            "redis",
            6379,
            "/0",
        )
        # workers get the inputs through Redis: only the aggregator writes files
        assert ("/out" in _mounts(svc)) == (queue == "aggregate")
    assert not any("container_name" in svc for svc in services.values())


def test_redis_is_private_password_protected_and_never_evicts() -> None:
    redis = _compose()["services"]["redis"]
    assert redis["image"] == "redis:7.2-alpine"
    command = _resolved(redis["command"])
    opts = dict(zip(command[1::2], command[2::2], strict=True))
    assert command[0] == "redis-server"
    assert opts["--requirepass"] == ENV["REDIS_PASSWORD"]
    assert opts["--maxmemory-policy"] == "noeviction"
    assert opts["--save"] == "" and opts["--appendonly"] == "no"  # a string, not YAML's False
    units = {"kb": 1024, "mb": 1024**2, "gb": 1024**3}
    size = re.fullmatch(r"(\d+)(kb|mb|gb)", opts["--maxmemory"].lower())
    assert size, opts["--maxmemory"]
    # the producer's backpressure: WINDOW_BLOCKS unread blocks per file a book task reads
    # (two files at most), times the book tasks KEDA and compose's defaults run at once
    book_args = build_parser().parse_args(_resolved(_compose()["services"]["worker-book"]["command"]))
    book_max = next(d for d in _keda() if d["metadata"]["name"] == "retape-worker-book")
    tasks = book_max["spec"]["maxReplicaCount"] * book_args.concurrency
    bound = WINDOW_BLOCKS * BLOCK_SIZE * 2 * tasks
    assert int(size.group(1)) * units[size.group(2)] >= 2 * bound
    assert "ports" not in redis
    check = " ".join(redis["healthcheck"]["test"])
    assert '"$$REDIS_PASSWORD"' in check and "ping" in check and "PONG" in check
    assert _resolved(redis["environment"])["REDIS_PASSWORD"] == ENV["REDIS_PASSWORD"]


def test_flower_runs_the_celery_app_behind_basic_auth_on_localhost() -> None:
    from celery import Celery
    from flower.options import options

    import workers.app

    flower = _compose()["services"]["flower"]
    assert flower["entrypoint"] == ["celery"]
    command = _resolved(flower["command"])
    assert command[:3] == ["-A", "workers.app", "flower"]
    assert isinstance(workers.app.app, Celery)
    known = set(options._options)  # Flower's own option names, as tornado stores them
    for opt in command[3:]:
        assert opt.startswith("--") and opt[2:].split("=")[0].replace("_", "-") in known, opt
    env = _resolved(flower["environment"])
    auth = env.get("FLOWER_BASIC_AUTH") or next(
        (o.split("=", 1)[1] for o in command if o.startswith(("--basic_auth=", "--basic-auth="))),
        None,
    )
    assert auth == f"{ENV['FLOWER_USER']}:{ENV['FLOWER_PASSWORD']}"
    assert "basic-auth" in known
    assert "@redis:6379/0" in env["REDIS_URL"]
    assert all(str(p).startswith("127.0.0.1:") for p in flower["ports"])


def test_producer_runs_the_loop_shipped_in_the_image_and_the_aggregator_writes_where_it_says() -> None:
    services = _compose()["services"]
    producer = services["producer"]
    shell, script = producer["entrypoint"]
    assert shell == "/bin/bash"
    dockerfile = (ROOT / "Dockerfile").read_text()
    workdir = re.search(r"^WORKDIR (\S+)", dockerfile, re.M)
    assert workdir and "COPY ops ./ops" in dockerfile
    assert script.startswith(workdir.group(1) + "/")
    assert (ROOT / script.removeprefix(workdir.group(1) + "/")).is_file()
    env = _resolved(producer["environment"])
    mounts = _mounts(producer)
    assert mounts[env["LANDING"]].endswith(":ro") and not mounts[env["REPORTS"]].endswith(":ro")
    # the aggregator writes to the --out path the producer gives, on the same host directory
    aggregator = services[_workers(services)["aggregate"]]
    assert _mounts(aggregator)[env["REPORTS"]] == mounts[env["REPORTS"]]
    # the one-shot audit reads and writes the same directories
    assert _mounts(services["audit"]) == mounts
    # SIGTERM lets the job being served finish: give it minutes, not Docker's 10 s
    assert re.fullmatch(r"\d+m", producer["stop_grace_period"])
    assert "@redis:6379/0" in env["REDIS_URL"]


def test_produce_script_parses() -> None:
    proc = subprocess.run(
        ["bash", "-n", str(ROOT / "ops" / "produce.sh")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_produce_script_submits_each_finished_day_and_publishes_the_newest_metrics(tmp_path: Path) -> None:
    landing, reports, calls = tmp_path / "landing", tmp_path / "reports", tmp_path / "calls"
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    for day in ("2024-08-07", "2024-08-08", "2024-08-09", today, "notes"):
        (landing / day).mkdir(parents=True)
    (landing / "2024-08-10").write_text("a file, not a day directory")
    (reports / "2024-08-07").mkdir(parents=True)
    (reports / "2024-08-07" / "metrics.prom").write_text("retape_job_dead_letters 0\n")
    stub = tmp_path / "retape"
    stub.write_text(
        '#!/usr/bin/env bash\nprintf "%s\\037" "$@" >> "$CALLS"; echo >> "$CALLS"\n'
        '[[ -n ${FAIL_ON:-} && $2 == *"$FAIL_ON" ]] && exit 2\nexit 0\n'
    )
    stub.chmod(0o755)
    env = {
        **os.environ,
        "LANDING": str(landing),
        "REPORTS": str(reports),
        "RETAPE_BIN": str(stub),
        "PRODUCE_ONCE": "1",
        "CALLS": str(calls),
    }

    def run(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(ROOT / "ops" / "produce.sh")],
            env={**env, **extra},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    proc = run(FAIL_ON="2024-08-09")
    assert proc.returncode == 1 and "2024-08-09: retape produce failed" in proc.stderr
    made = [line.rstrip("\x1f").split("\x1f") for line in calls.read_text().splitlines()]
    # done (metrics.prom exists), today (still being written), non-day names: not submitted
    assert made == [
        ["produce", f"{landing}/{day}", "--out", f"{reports}/{day}"] for day in ("2024-08-08", "2024-08-09")
    ]
    for argv in made:
        args = build_parser().parse_args(argv)
        assert args.command == "produce" and args.paths == [argv[1]] and args.out == argv[3]
    assert (reports / "retape.prom").read_text() == "retape_job_dead_letters 0\n"

    # the aggregator finished 2024-08-08: it is not submitted again, and its metrics are published
    (reports / "2024-08-08").mkdir()
    (reports / "2024-08-08" / "metrics.prom").write_text("retape_job_dead_letters 1\n")
    calls.unlink()
    proc = run()
    assert proc.returncode == 0, proc.stderr
    assert [line.split("\x1f")[1] for line in calls.read_text().splitlines()] == [f"{landing}/2024-08-09"]
    assert (reports / "retape.prom").read_text() == "retape_job_dead_letters 1\n"
    assert not list(reports.glob(".retape.prom*"))


def _keda() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((ROOT / "ops" / "keda").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_keda_scales_one_deployment_per_queue_on_its_celery_list() -> None:
    docs = _keda()
    auths = {d["metadata"]["name"]: d for d in docs if d["kind"] == "TriggerAuthentication"}
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    assert all(d["apiVersion"] == "keda.sh/v1alpha1" for d in docs)
    replicas = {"book": (0, 16), "replay": (0, 4), "llm": (0, 2), "ledger": (0, 4), "aggregate": (1, 2)}
    by_queue: dict[str, dict[str, Any]] = {}
    for so in scaled:
        (trigger,) = so["spec"]["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "redis"
        assert all(isinstance(v, str) for v in meta.values()), meta  # KEDA metadata is string -> string
        queue = meta["listName"]
        assert queue in ALL_QUEUES and queue not in by_queue
        by_queue[queue] = so
        assert so["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert so["spec"]["scaleTargetRef"]["name"] == so["metadata"]["name"] == f"retape-worker-{queue}"
        assert meta["addressFromEnv"] == "REDIS_ADDRESS" and "address" not in meta
        assert meta["databaseIndex"] == urlsplit(workers_app_redis_url()).path.lstrip("/")
        assert int(meta["listLength"]) > 0
        spec = so["spec"]
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == replicas[queue]
        assert spec["pollingInterval"] > 0 and spec["cooldownPeriod"] > 0
        auth = auths[trigger["authenticationRef"]["name"]]
        assert {"parameter": "password", "name": "retape-redis", "key": "password"} in auth["spec"][
            "secretTargetRef"
        ]
    assert set(by_queue) == set(ALL_QUEUES)
    assert by_queue["book"]["spec"]["triggers"][0]["metadata"]["listLength"] == "4"
    assert set(auths) == {"retape-redis-auth"}


def workers_app_redis_url() -> str:
    """The compose workers' broker URL (database included), defaults resolved."""
    return str(_resolved(_compose()["services"]["worker-book"]["environment"])["REDIS_URL"])


def _rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((ROOT / "ops" / "prometheus" / "alerts.yml").read_text())
    rules = [rule for group in data["groups"] for rule in group["rules"]]
    assert rules and all(group["name"] and group["rules"] for group in data["groups"])
    return rules


def _expr(rule: dict[str, Any]) -> str:
    return " ".join(str(rule["expr"]).split()).replace("( ", "(")


def test_alert_rules_use_only_metrics_retape_and_flower_publish() -> None:
    histogram_parts = ("_bucket", "_sum", "_count")
    spec = importlib.util.find_spec("flower.events")
    assert spec and spec.origin
    flower_source = Path(spec.origin).read_text()
    used = set()
    for rule in _rules():
        expr = _expr(rule)
        for name in re.findall(r"(?<![A-Za-z0-9_:])retape_[a-z_]+", expr):
            base = next((name.removesuffix(s) for s in histogram_parts if name.endswith(s)), name)
            if base != name and METRICS.get(base, ("",))[0] == "histogram":
                used.add(base)
                continue
            assert name in METRICS, f"{rule['alert']}: {name} is not in shared.metrics.METRICS"
            kind = METRICS[name][0]
            assert kind != "histogram", f"{rule['alert']}: histogram {name} needs _bucket/_sum/_count"
            in_rate = re.search(rf"\b(rate|irate|increase)\({name}\b", expr)
            assert bool(in_rate) == (kind == "counter"), f"{rule['alert']}: {name} is a {kind}"
            used.add(name)
        for name in re.findall(r"\bflower_[a-z_]+", expr):
            assert f"'{name}'" in flower_source, f"{name} is not a Flower metric"
    assert {
        "retape_stream_integrity_score",
        "retape_stream_gap_rate",
        "retape_replay_request_duration_seconds",
        "retape_upstream_connection_failures_total",
        "retape_job_dead_letters",
    } <= used


def test_alert_rules_carry_the_requested_thresholds() -> None:
    rules = _rules()
    for rule in rules:
        assert re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"])
        assert re.fullmatch(r"\d+[smh]", str(rule["for"])), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    exprs = {_expr(r): r for r in rules}
    wanted = [
        r"retape_stream_integrity_score < 98",
        r"retape_stream_gap_rate > 0\.01",
        r"histogram_quantile\(0\.99, sum by \(le, source\) "
        r"\(rate\(retape_replay_request_duration_seconds_bucket\[5m\]\)\)\) > 0\.2",
        r"increase\(retape_upstream_connection_failures_total\[10m\]\) >= 5",
        r"retape_job_dead_letters > 0",
    ]
    for pattern in wanted:
        hits = [e for e in exprs if re.fullmatch(pattern, e)]
        assert len(hits) == 1, f"no single rule is {pattern!r}: {sorted(exprs)}"
        if "job_dead_letters" not in pattern:
            assert exprs[hits[0]]["labels"]["severity"] == "critical"  # the thresholds that page


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    slugs = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", markdown, re.M):
        slugs.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return slugs


def test_every_runbook_link_names_a_heading() -> None:
    runbook = RUNBOOK.read_text()
    anchors = _anchors(runbook)
    assert {"a-worker-killed-mid-task", "redis-lost-or-restarted", "rollback", "when-to-page"} <= anchors
    for rule in _rules():
        path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert path == "ops/runbook.md" and anchor in anchors, rule["alert"]
    files = [COMPOSE, ROOT / ".env.example", *(ROOT / "ops").rglob("*.y*ml"), ROOT / "ops" / "produce.sh"]
    for path in files:
        for anchor in re.findall(r"ops/runbook\.md#([\w-]+)", path.read_text()):
            assert anchor in anchors, f"{path.name}: #{anchor}"
    for anchor in re.findall(r"\]\(#([\w-]+)\)", runbook):
        assert anchor in anchors, f"runbook: #{anchor}"


def test_runbook_states_the_numbers_and_names_the_code_uses() -> None:
    from shared import keys
    from shared import messaging as celery_app
    from shared.jobstore import COUNTER_TTL_S, FINISHED_TTL_S
    from workers import base as tasks
    from workers.data import FEEDER_TIMEOUT_S

    runbook = " ".join(RUNBOOK.read_text().split())
    assert f"redis-cli LRANGE {keys.DEAD_LETTERS} 0 -1" in runbook
    assert "retape status JOB" in runbook
    assert f"{tasks.MAX_TRIES} times" in runbook
    assert f"{celery_app.VISIBILITY_TIMEOUT_S} s" in runbook
    assert f"{celery_app.HARD_TIME_LIMIT_S} s" in runbook
    for path in (ROOT / "ops" / "keda").glob("worker-*.yaml"):
        assert f"{celery_app.HARD_TIME_LIMIT_S} s" in path.read_text(), path.name
    assert "maxmemory-policy noeviction" in runbook and "per running producer" in runbook
    assert f"at most {WINDOW_BLOCKS} blocks of {BLOCK_SIZE >> 20} MiB unread per input file" in runbook
    assert f"give up after {FEEDER_TIMEOUT_S:g} s" in runbook
    assert f"kept {COUNTER_TTL_S // 86400} days" in runbook  # the redelivery counters
    assert f"a finished job's state kept {FINISHED_TTL_S // 3600} hours" in runbook
    for name in _compose()["services"]:
        assert f"`{name}" in runbook, f"the runbook does not mention the service {name}"
    for queue in ALL_QUEUES:
        assert f"`{queue}`" in runbook
