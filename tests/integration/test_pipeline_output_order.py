"""The pipeline against the ABS emulator's reordered-output fault: the same rows as a fault-free run."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.support import admin, batchcode_connection, emulator, output, run_pipeline, sqlite_warehouse


def test_reordered_output_loads_every_code_on_its_own_row(airflow_db: Path, tmp_path: Path) -> None:
    path = sqlite_warehouse(tmp_path, 120, messy=False)
    with emulator() as server, batchcode_connection(server):
        # every record sent (repeated texts included, each with its own record id): the re-join's hard case
        clean = run_pipeline(tmp_path, BATCHCODE_TEST_CHUNK="50", BATCHCODE_TEST_DEDUPE="0")
    expected = output(lambda: sqlite3.connect(path))
    with emulator(reorder_output_rate=1.0) as server, batchcode_connection(server):
        reordered = run_pipeline(tmp_path, BATCHCODE_TEST_CHUNK="50", BATCHCODE_TEST_DEDUPE="0")
        created = admin(server, "stats")["operations_created"]["demo-client"]
    assert clean.state == reordered.state == "success"
    assert created == 3, "three chunks, each with its output shuffled"
    got = output(lambda: sqlite3.connect(path))
    assert len(expected) == 120
    assert [r[:7] for r in got] == [r[:7] for r in expected]
