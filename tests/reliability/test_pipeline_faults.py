"""The whole pipeline under injected service faults, expired outputs, a failing quality gate and nasty input.

Every test runs the real pipeline (``dag.test()``) against the emulator on loopback with a
SQLite warehouse, then checks that every record is in the output table exactly once and that
no secret reached the logs or the metadata DB. The fault run is compared with a fault-free run of
the same records (``baseline.py``): every record must be coded the same way in both. ``BATCHCODE_RELIABILITY_SCALE=full`` (set by
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

from airflow_batchcode.sample_data import seed_sqlite
from tests.reliability.baseline import (
    BASELINE_DAY,
    assert_same_as_baseline,
    baseline_warehouse,
    coded,
)
from tests.support import (
    SIGNATURE_MARKERS,
    EncryptedSampler,
    admin,
    batchcode_connection,
    emulator,
    issued_tokens,
    output,
    run_pipeline,
    scan_encrypted,
    scan_files,
    scan_sqlite,
    sqlite_warehouse,
)

FULL = os.environ.get("BATCHCODE_RELIABILITY_SCALE") == "full"
CORPUS = Path(__file__).with_name("bad_input.jsonl")
DAY = "2026-01-01"


def assert_no_leaks(
    text: str, home: Path, secrets: list[str], logs: tuple[Path, ...] = (), sampled: EncryptedSampler | None = None
) -> None:
    """No secret (nor a presigned signature) in ``text`` (captured output), in the log files under
    ``AIRFLOW_HOME/logs`` and ``logs``, in the metadata DB, or in its Fernet-encrypted columns once
    decrypted: as they are now, and as ``sampled`` saw them during the run (trigger rows, which must
    have been seen, are gone once their wait ends; ``dag.test()`` without a triggerer runs its
    triggers inline and writes no rows)."""
    needles = [*secrets, *SIGNATURE_MARKERS]
    if sampled is not None:
        assert sampled.rows_of("trigger.kwargs") >= 1, "no trigger row was seen during the run"
        assert sampled.leaks(needles) == [], "secret in an encrypted column during the run"
    assert [n[:12] for n in needles if n in text] == [], "secret in the logs"
    for folder in (home / "logs", *logs):
        if folder.exists():
            assert scan_files(folder, needles) == [], f"secret in the log files under {folder}"
    assert scan_sqlite(home / "airflow.db", needles) == [], "secret in the metadata DB"
    assert scan_encrypted(home / "airflow.db", needles) == [], "secret in an encrypted column of the metadata DB"


CREATES = {
    "abs": ("POST /v1/topics/{topic}/batch-code", "POST /v1/topics/{topic}/models/{model}/batch-code"),
    "refinery": ("POST /v1/jobs",),
    "superai": ("POST /v1/apps/{app_uuid}/jobs",),
    "gravity": ("POST /api/v1/jobs",),
}
"""Each service's create routes, as the emulator names them in ``lost_responses``."""


def lost_creates(stats: dict[str, Any], service: str) -> int:
    """How many create calls had their answer dropped (the operation exists, the client never heard)."""
    lost: dict[str, int] = stats["lost_responses"]
    return sum(count for route, count in lost.items() if route in CREATES[service])


EVERY_RECORD = {"BATCHCODE_TEST_DEDUPE": "0"}
"""The fault tests send every record: the faults need the volume (de-duplication has its own tests)."""


def test_the_pipeline_survives_every_kind_of_service_fault(
    airflow_db: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    records = 40_000 if FULL else 10_000
    chunk = str(records // 4)
    baseline_warehouse(tmp_path, records)
    with emulator() as server, batchcode_connection(server):
        clean_run = run_pipeline(tmp_path / "baseline", BASELINE_DAY, BATCHCODE_TEST_CHUNK=chunk, **EVERY_RECORD)
    assert clean_run.state == "success"
    clean = coded(tmp_path / "baseline" / "warehouse.db")
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
        dag_run = run_pipeline(tmp_path, BATCHCODE_TEST_CHUNK=chunk, BATCHCODE_TEST_RETRIES="2", **EVERY_RECORD)
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
    assert_same_as_baseline(coded(path), clean)  # no ABS fault turns a record into an error
    created = stats["operations_created"]["fault-client"]
    assert 4 <= created <= 4 + lost_creates(stats, "abs"), "operations stay bounded"
    for kind in ("5xx", "429", "lost_response", "truncate", "slow"):
        assert stats["faults"].get(kind, 0) >= 1, f"no {kind} fault was injected"
    assert_no_leaks(log.out + log.err, airflow_db, [secret, *tokens])


def test_outputs_deleted_before_download_fail_clearly_and_load_nothing(
    airflow_db: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = sqlite_warehouse(tmp_path)
    seed_sqlite(str(path), 400, days=2, start=DAY)
    with emulator() as server, batchcode_connection(server):  # an earlier day, kept: the table exists
        earlier = run_pipeline(tmp_path / "earlier", BASELINE_DAY)
    assert earlier.state == "success"
    kept = output(lambda: sqlite3.connect(path), earlier.run_id)
    assert len(kept) == 200
    # retention=0: the emulator deletes the outputs at the moment they are ready (by its clock), so
    # every download finds them gone, however slow the machine; no real-time window to race.
    with emulator(retention=0) as server, batchcode_connection(server):
        dag_run = run_pipeline(tmp_path)
    log = capfd.readouterr().out
    assert dag_run.state == "failed"
    assert "results are gone: the service deletes them some time after completion (ABS within 24 hours)" in log
    assert "Clear the whole chunk task group to code the chunk again" in log
    assert output(lambda: sqlite3.connect(path), dag_run.run_id) == [], "nothing loaded for the failed run"
    assert output(lambda: sqlite3.connect(path)) == kept, "the earlier run's rows are untouched"


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
