"""``retape ledger`` as a job on real brokers and real worker processes: the same bytes from one
process, the embedded default and a broker's 1 and 3 workers (inputs read from disk or through
the broker); the notes asked as ``llm`` sub-tasks across 4 workers under one rate limit, a 429's
``Retry-After`` holding every worker, the key only in the workers' environment, a second run
asking nothing; a worker killed with SIGKILL while the LLM answers changes no ledger byte."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from pipeline_helpers import env, outputs, retape, start_retape, wait_for
from test_pipeline_redis import pool_children, workers

from bench.replay_limit import most_in_window
from tests.ledger_gen import write_demo
from tests.llm_server import chat_server, completion
from tests.test_ledger_llm import NOTE_INJECTION as INJECTION
from tests.test_ledger_llm import NOTE_WITHDRAWAL as WITHDRAWAL
from tests.test_ledger_llm import honest
from tests.unit.test_ledger_merge import FILES

KEY = "sk-worker-only-secret"
FILLER = [f"Call with support, ticket {n}: they said the account is fine." for n in range(8)]
LEDGER_FILES = ("ledger.jsonl", "ledger.csv", "balances.json", "unresolved.jsonl", "audit/records.jsonl")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated set (real FTX trades, three accounts, notes among the fragments)."""
    root = tmp_path_factory.mktemp("generated")
    write_demo(root / "fragments", 11, 3)
    return root / "fragments"


@pytest.fixture
def noted(tmp_path: Path) -> Path:
    alice = tmp_path / "fragments" / "alice"
    alice.mkdir(parents=True)
    for name, data in FILES.items():
        (alice / name).write_bytes(data)
    (alice / "notes.txt").write_text("\n\n".join([WITHDRAWAL, INJECTION, *FILLER]) + "\n")
    return tmp_path / "fragments"


def script(delay_s: float = 0.0, first_429: bool = False):  # type: ignore[no-untyped-def]
    def answer(note: str, known: list[dict[str, Any]], n: int) -> tuple[int, dict[str, str], Any]:
        time.sleep(delay_s)
        if first_429 and n == 0:
            return 429, {"Retry-After": "2"}, {"error": {"message": "slow down"}}
        if note in (WITHDRAWAL, INJECTION):  # a link; an injected instruction, obeyed by the model
            return honest(note, known, n)
        return 200, {}, completion({"claims": []})

    return answer


def llm_env(url: str, cache: Path, **extra: str) -> dict[str, str]:
    return env(
        RETAPE_LLM_BASE_URL=url,
        RETAPE_LLM_MODEL="test-model",
        RETAPE_LLM_CACHE=str(cache),
        RETAPE_LLM_TPM="10000000",
        **extra,
    )


def ledger_bytes(out: Path) -> dict[str, bytes]:
    got = outputs(out)
    return {name: got[name] for name in LEDGER_FILES}


def test_the_default_and_any_worker_count_give_the_bytes_of_one_process(
    generated: Path, broker: str, tmp_path: Path
) -> None:
    reference = tmp_path / "one"
    proc = retape("ledger", str(generated), "--out", str(reference), "--in-process", "--quiet")
    assert proc.returncode == 0, proc.stderr
    single = outputs(reference)
    report = json.loads(single["report.json"])
    assert report["transactions"] > 150 and report["unresolved"].get("note", 0) > 0
    runs = {"embedded": ("--no-progress",)}
    for name, args in runs.items():
        out = tmp_path / name
        proc = retape("ledger", str(generated), "--out", str(out), *args)
        assert proc.returncode == 0, proc.stderr
        assert outputs(out) == single, name
    for count, read in ((1, "direct"), (3, "broker")):
        out = tmp_path / f"w{count}"
        with workers(broker, count, tmp_path / f"w{count}.log", RETAPE_READ_INPUTS=read):
            proc = retape("ledger", str(generated), "--out", str(out), "--broker", broker, "--no-progress")
        assert proc.returncode == 0, proc.stderr
        assert outputs(out) == single, (count, read)


def test_llm_calls_across_4_workers_keep_one_limit_and_a_rerun_asks_nothing(
    noted: Path, broker: str, tmp_path: Path
) -> None:
    import redis

    with chat_server(script(first_429=True)) as server:
        reference = tmp_path / "one"
        environ = llm_env(server.url, tmp_path / "cache-one", RETAPE_LLM_API_KEY=KEY, RETAPE_LLM_RPM="600")
        proc = retape(
            "ledger", str(noted), "--out", str(reference), "--in-process", "--quiet", environ=environ
        )
        assert proc.returncode == 0, proc.stderr
        asked_alone = len(server.requests)
        server.requests.clear()

        # The key is only in the workers' environment; the command names endpoint, model and limit.
        worker_env = {"RETAPE_LLM_API_KEY": KEY, "RETAPE_LLM_CACHE": str(tmp_path / "cache-w")}
        command_env = llm_env(server.url, tmp_path / "unused", RETAPE_LLM_RPM="120")
        out = tmp_path / "w4"
        with workers(broker, 4, tmp_path / "w4.log", **worker_env):
            proc = retape("ledger", str(noted), "--out", str(out), "--broker", broker, environ=command_env)
            assert proc.returncode == 0, proc.stderr
            times = sorted(t for t, _ in server.requests)
            # Every note asked once more than the 429 answered; 120 a minute for all 4 workers.
            assert len(times) == asked_alone == len(FILLER) + 2 + 1
            assert most_in_window(times, 1.0) <= 2, times
            assert times[1] - times[0] >= 1.95  # the 429's Retry-After held every worker
            assert server.keys == {f"Bearer {KEY}"}
            first = json.loads((out / "report.json").read_text())["llm"]
            assert first["requests"] == len(FILLER) + 2 and first["cached"] == 0

            again = tmp_path / "again"
            proc = retape("ledger", str(noted), "--out", str(again), "--broker", broker, environ=command_env)
            assert proc.returncode == 0, proc.stderr
            assert len(server.requests) == len(times)  # from the workers' cache
        assert "0 request(s) sent" in proc.stdout
    assert ledger_bytes(out) == ledger_bytes(again) == ledger_bytes(reference)
    assert json.loads((again / "report.json").read_text())["llm"]["cached"] == len(FILLER) + 2
    records = [json.loads(line) for line in (out / "audit" / "records.jsonl").read_text().splitlines()]
    (link,) = [r for r in records if r["type"] == "llm_link"]
    assert link["note"].endswith("notes.txt:1") and link["model"] == "test-model"
    assert link["transaction"].startswith("withdrawal") and len(link["prompt_sha256"]) == 64
    assert json.loads((out / "balances.json").read_text())["alice"]["BTC"]["amount"] == "0.9995"
    client = redis.Redis.from_url(broker)
    for key in client.scan_iter(match="retape:*"):
        if client.type(key) == b"hash":
            assert KEY.encode() not in b"".join(client.hgetall(key).values())
    for path in [*out.rglob("*"), *again.rglob("*")]:
        assert not path.is_file() or KEY.encode() not in path.read_bytes()


def test_a_worker_killed_while_the_llm_answers_changes_no_ledger_byte(
    noted: Path, broker: str, tmp_path: Path
) -> None:
    with chat_server(script(delay_s=1.0)) as server:
        reference = tmp_path / "one"
        environ = llm_env(server.url, tmp_path / "cache-one", RETAPE_LLM_RPM="6000")
        proc = retape(
            "ledger", str(noted), "--out", str(reference), "--in-process", "--quiet", environ=environ
        )
        assert proc.returncode == 0, proc.stderr
        server.requests.clear()

        out = tmp_path / "killed"
        environ = llm_env(server.url, tmp_path / "cache-two", RETAPE_LLM_RPM="6000")
        pool = workers(broker, 2, tmp_path / "w.log", RETAPE_LLM_CACHE=str(tmp_path / "cache-two"))
        with pool:
            command = start_retape(
                "ledger", str(noted), "--out", str(out), "--broker", broker, environ=environ
            )
            wait_for(lambda: len(server.requests) >= 2, 60, "two LLM requests under way")
            victims = pool_children(pool)
            assert victims
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            _, err = command.communicate(timeout=180)
            assert command.returncode == 0, err
    assert ledger_bytes(out) == ledger_bytes(reference)
