"""The four operators in a real Airflow run (``dag.test()``) against the ABS emulator on loopback.

Covers the deferrable and poking waits, every retry case (a task that dies right after its
work on the first try), a failed operation, and a scan of logs and the whole metadata DB for
secrets after a run with injected faults.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    SIGNATURE_MARKERS,
    admin,
    batchcode_connection,
    emulator,
    issued_tokens,
    scan_sqlite,
    write_manifest,
)

DAGS = Path(__file__).parents[1] / "dags"
RECORDS = [
    {"recordId": f"R{i:04d}", "occp_text": title, "tasks_text": duties}
    for i, (title, duties) in enumerate(
        [("software developer", "writing code"), ("brickie", ""), ("registered nurse", "caring for patients")] * 40
    )
]


def load_dag(dag_id: str) -> Any:
    spec = importlib.util.spec_from_file_location("batchcode_four_steps", DAGS / "batchcode_four_steps.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return getattr(module, dag_id)


def run(dag_id: str, tmp_path: Path, records: list[dict[str, Any]] = RECORDS, **conf: Any) -> tuple[Any, Path]:
    manifest = write_manifest(tmp_path / "manifest.jsonl", records)
    destination = tmp_path / "results"
    run_conf = {"manifest": str(manifest), "destination": str(destination), **conf}
    return load_dag(dag_id).test(run_conf=run_conf), destination


def task_rows(home: Path, run_id: str) -> dict[str, tuple[str, int]]:
    with sqlite3.connect(home / "airflow.db") as conn:
        rows = conn.execute("SELECT task_id, state, try_number FROM task_instance WHERE run_id = ?", (run_id,))
        return {task: (state, tries) for task, state, tries in rows}


def xcoms(home: Path, run_id: str) -> dict[str, Any]:
    with sqlite3.connect(home / "airflow.db") as conn:
        rows = conn.execute("SELECT task_id, value FROM xcom WHERE run_id = ? AND key = 'return_value'", (run_id,))
        return {task: value for task, value in rows}


@pytest.mark.parametrize("dag_id", ["four_steps_deferred", "four_steps_poke"])
def test_four_steps_code_every_record(
    dag_id: str, airflow_db: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with emulator(processing_delay=1.0) as server, batchcode_connection(server):
        dag_run, destination = run(dag_id, tmp_path)
        stats = admin(server, "stats")
    log = capfd.readouterr().out
    assert dag_run.state == "success"
    lines = (destination / "output.jsonl").read_text().splitlines()
    assert [json.loads(line)["recordId"] for line in lines] == [r["recordId"] for r in RECORDS]
    assert json.loads((destination / "metadata.json").read_text())["recordCount"] == len(RECORDS)
    assert stats["operations_created"] == {"demo-client": 1}
    assert ("Pausing task as DEFERRED" in log) == (dag_id == "four_steps_deferred")
    values = xcoms(airflow_db, dag_run.run_id)
    assert all(len(json.dumps(v) if not isinstance(v, str | bytes) else v) < 2048 for v in values.values())
    assert "Waiting on abs operation" in log


def test_every_task_retried_after_dying_post_work_reuses_the_remote_state(
    airflow_db: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    crash = ["create", "upload", "wait", "download"]
    with emulator(processing_delay=0.5) as server, batchcode_connection(server):
        dag_run, destination = run("four_steps_crash_once", tmp_path, crash=crash)
        stats = admin(server, "stats")
    log = capfd.readouterr().out
    assert dag_run.state == "success"
    assert {task: tries for task, (_, tries) in task_rows(airflow_db, dag_run.run_id).items()} == {
        task: 2 for task in crash
    }
    assert stats["operations_created"] == {"demo-client": 1}, "a retried create re-attaches"
    assert stats["uploads"] == {"accepted": 1, "refused": 0}, "a retried upload checks the status first"
    assert "Re-attaching to operation" in log
    assert "already uploaded, not sending it again" in log
    lines = (destination / "output.jsonl").read_text().splitlines()
    assert len(lines) == len(RECORDS), "a retried download replaces the file"
    with sqlite3.connect(airflow_db / "airflow.db") as conn:
        deadlines = conn.execute(
            "SELECT value FROM task_state_store WHERE run_id = ? AND task_id = 'wait' AND key = 'batchcode_deadline'",
            (dag_run.run_id,),
        ).fetchall()
    assert len(deadlines) == 1, "the sensor's deadline is set once and kept across retries"


def test_a_failed_operation_fails_the_sensor_naming_the_operation_and_the_services_message(
    airflow_db: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    mixed = [{"recordId": "1", "occp_text": "a", "tasks_text": "b"}, {"occp_text": "c", "tasks_text": "d"}]
    with emulator() as server, batchcode_connection(server):
        dag_run, destination = run("four_steps_deferred", tmp_path, records=mixed)
    log = capfd.readouterr().out
    assert dag_run.state == "failed"
    states = task_rows(airflow_db, dag_run.run_id)
    assert states["wait"][0] == "failed" and states["download"][0] == "upstream_failed"
    assert "OperationFailedError" in log and "Batch coding operation failed (operation " in log
    assert "All lines of input must contain the same fields" in log
    assert not (destination / "output.jsonl").exists()


def test_no_secret_reaches_logs_xcom_or_the_metadata_db_even_with_faults(
    airflow_db: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    clients = {"leak-test": secret}
    with (
        emulator(clients=clients, fault_5xx_rate=0.2, fault_truncate_rate=0.3, seed=3) as server,
        batchcode_connection(server, client_id="leak-test", secret=secret, max_attempts=10),
    ):
        dag_run, _ = run("four_steps_deferred", tmp_path)
        tokens = issued_tokens(server)
        faults = admin(server, "stats")["faults"]
    log = capfd.readouterr()
    assert dag_run.state == "success"
    assert sum(faults.values()) >= 1, "faults were injected"
    assert tokens
    needles = [secret, *tokens, *SIGNATURE_MARKERS]
    text = log.out + log.err
    assert [n[:12] for n in needles if n in text] == []
    assert scan_sqlite(airflow_db / "airflow.db", needles) == []
