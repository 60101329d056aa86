"""The whole pipeline under injected service faults, expired outputs, a failing quality gate and nasty input.

Every test runs the real pipeline (``dag.test()``) against the emulator on loopback with a
SQLite warehouse, then checks that every record is in the output table exactly once and that
no secret reached the logs or the metadata DB. ``BATCHCODE_RELIABILITY_SCALE=full`` (set by
``make reliability``) runs the large variants: more records, a million identical rows.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    SIGNATURE_MARKERS,
    admin,
    batchcode_connection,
    emulator,
    issued_tokens,
    output,
    run_pipeline,
    scan_sqlite,
    sqlite_warehouse,
)

FULL = os.environ.get("BATCHCODE_RELIABILITY_SCALE") == "full"
CORPUS = Path(__file__).with_name("bad_input.jsonl")
DAY = "2026-01-01"


def assert_no_leaks(text: str, home: Path, secrets: list[str]) -> None:
    needles = [*secrets, *SIGNATURE_MARKERS]
    assert [n[:12] for n in needles if n in text] == [], "secret in the logs"
    assert scan_sqlite(home / "airflow.db", needles) == [], "secret in the metadata DB"


def test_the_pipeline_survives_every_kind_of_service_fault(
    airflow_db: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    records = 40_000 if FULL else 10_000
    path = sqlite_warehouse(tmp_path, records)
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    faults = {
        "fault_5xx_rate": 0.2,
        "fault_429_rate": 0.05,
        "fault_429_burst": 3,
        "fault_retry_after": 1,
        "fault_lost_response_rate": 0.05,
        "fault_truncate_rate": 0.3,
        "fault_slow_rate": 0.05,
        "fault_slow_seconds": 2.5,
        "seed": 2026,
    }
    with (
        emulator(clients={"fault-client": secret}, **faults) as server,
        batchcode_connection(
            server, client_id="fault-client", secret=secret, max_attempts=10, read_timeout=1.5, backoff_max=2
        ),
    ):
        dag_run = run_pipeline(tmp_path, BATCHCODE_TEST_CHUNK=str(records // 4), BATCHCODE_TEST_RETRIES="2")
        stats = admin(server, "stats")
        tokens = issued_tokens(server)
    log = capfd.readouterr()
    rows = output(lambda: sqlite3.connect(path))
    print(
        f"\n[faults] records in {records}, rows out {len(rows)}, operations created "
        f"{stats['operations_created']}, faults injected {stats['faults']}, uploads {stats['uploads']}"
    )
    assert dag_run.state == "success"
    assert sorted(r[1] for r in rows) == list(range(1, records + 1)), "every record exactly once"
    created = stats["operations_created"]["fault-client"]
    assert 4 <= created <= 4 + stats["faults"].get("lost_response", 0), "operations stay bounded"
    for kind in ("5xx", "429", "lost_response", "truncate", "slow"):
        assert stats["faults"].get(kind, 0) >= 1, f"no {kind} fault was injected"
    assert_no_leaks(log.out + log.err, airflow_db, [secret, *tokens])


def test_outputs_deleted_before_download_fail_clearly_and_load_nothing(
    airflow_db: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = sqlite_warehouse(tmp_path, 200)
    with emulator(retention=0.2, processing_delay=0.2) as server, batchcode_connection(server):
        dag_run = run_pipeline(tmp_path)
    log = capfd.readouterr().out
    assert dag_run.state == "failed"
    assert "results are gone: the service deletes them some time after completion (ABS within 24 hours)" in log
    assert "Clear the whole chunk task group to code the chunk again" in log
    assert output(lambda: sqlite3.connect(path)) == [] if _table_exists(path) else True


def _table_exists(path: Path) -> bool:
    with closing(sqlite3.connect(path)) as conn:
        found = conn.execute("SELECT name FROM sqlite_master WHERE name = 'coded_responses'").fetchone()
    return found is not None


def test_a_quality_gate_below_the_success_rate_fails_after_the_outputs_are_written(
    airflow_db: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = sqlite_warehouse(tmp_path, 500)
    with emulator() as server, batchcode_connection(server):
        dag_run = run_pipeline(tmp_path, BATCHCODE_TEST_MIN_SUCCESS="0.99")
    log = capfd.readouterr().out
    assert dag_run.state == "failed"
    assert "QualityGateError" in log and "is below the required 99.0%" in log
    assert len(output(lambda: sqlite3.connect(path))) == 500, "outputs written before the gate failed the run"


def _corpus_rows(repeat: int) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
    rows: list[tuple[Any, ...]] = []
    entries = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    for entry in entries:
        occupation: Any = entry.get("occupation")
        if "occupation_hex" in entry:
            occupation = bytes.fromhex(entry["occupation_hex"])
        duties = entry.get("duties")
        if "duties_repeat" in entry:
            text, times = entry["duties_repeat"]
            duties = text * times
        for _ in range(min(entry.get("repeat", 1), repeat)):
            rows.append((entry["id"], DAY, occupation, duties))
    return rows, entries


def test_the_bad_input_corpus_gets_a_clear_outcome_per_record(
    airflow_db: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    repeat = 1_000_000 if FULL else 100_000
    path = sqlite_warehouse(tmp_path)
    rows, entries = _corpus_rows(repeat)
    with closing(sqlite3.connect(path)) as conn:
        conn.executemany(
            "INSERT INTO survey_responses VALUES (?, ?, CASE WHEN typeof(?) = 'blob' THEN CAST(? AS TEXT) ELSE ? END, ?)",
            ((rid, day, occ, occ, occ, duties) for rid, day, occ, duties in rows),
        )
        conn.commit()
    with emulator() as server, batchcode_connection(server):
        dag_run = run_pipeline(tmp_path, BATCHCODE_TEST_CHUNK="50000")
    assert dag_run.state == "success", capfd.readouterr().out[-3000:]
    out = output(lambda: sqlite3.connect(path))
    assert len(out) == len(rows) and sorted(r[1] for r in out) == list(range(1, len(rows) + 1))
    outcomes: dict[str, Counter[str]] = {}
    errors: dict[str, set[str]] = {}
    for record_id, _, status, error, *_ in out:
        outcomes.setdefault(record_id, Counter())[status] += 1
        if error:
            errors.setdefault(record_id, set()).add(error)
    for entry in entries:
        seen = outcomes[entry["id"]]
        if entry["expect"] == "error":
            assert set(seen) == {"error"}, (entry["id"], seen)
            assert any(entry["error"] in e for e in errors[entry["id"]]), (entry["id"], errors[entry["id"]])
        else:
            assert "error" not in seen, (entry["id"], seen, errors.get(entry["id"]))
    assert sum(outcomes["DUP"].values()) == 3
    assert sum(outcomes["IDENTICAL"].values()) == repeat
