"""Memory stays flat: the default extract's peak RSS does not grow with the rows it streams.

Each extract runs in a fresh process (``stream_query`` from a real SQLite warehouse into
``write_chunks``, as the ``extract`` task's default path), once over 50,000 rows and once over
500,000; the peak RSS of the two may differ by less than 20 MB, the bench's goal for 1,000,000
rows against 100,000 (``make bench``, figure 4). A per-record leak shows here at any rate above
about 50 bytes a record. One did: msgspec 0.22.0's ``encode_lines`` given ``map(Struct, ...)``
kept 150-190 bytes a record, 143 MB at 1,000,000 rows (see :mod:`airflow_batchcode.manifest_json`);
this test failed on it with 138 MB against 222 MB.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SMALL, LARGE = 50_000, 500_000
GROWTH_MB = 20

CHILD = """
import json, resource, sys
from airflow_batchcode.manifests import ChunkOptions, write_chunks
from airflow_batchcode.warehouse import stream_query

fields = {"record_id": "respondent_id", "occp_text": "occupation", "tasks_text": "duties"}
sql = "SELECT respondent_id, occupation, duties FROM survey_responses WHERE rowid <= " + sys.argv[2]
with stream_query("memory_warehouse", sql) as (columns, rows):
    summary = write_chunks(rows, columns, fields, sys.argv[1], options=ChunkOptions(1_000_000))
print(json.dumps({"sent": summary.sent, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _seed(path: Path, count: int) -> None:
    """``count`` distinct answers, about 100 bytes of manifest each."""
    rows = (
        (f"R{i:07d}", f"occupation number {i % 9973}", f"duties of answer {i}, done daily and weekly")
        for i in range(count)
    )
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE survey_responses (respondent_id TEXT, occupation TEXT, duties TEXT)")
        conn.executemany("INSERT INTO survey_responses VALUES (?, ?, ?)", rows)
        conn.commit()


def _peak(tmp_path: Path, warehouse: Path, count: int) -> float:
    env = {
        **os.environ,
        "AIRFLOW_CONN_MEMORY_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(warehouse)}),
    }
    folder = tmp_path / f"chunks-{count}"
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(count)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["sent"] == count
    return float(report["peak_mb"])


def test_default_extract_memory_does_not_grow_with_rows(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.db"
    _seed(warehouse, LARGE)
    small, large = _peak(tmp_path, warehouse, SMALL), _peak(tmp_path, warehouse, LARGE)
    assert large - small < GROWTH_MB, f"peak RSS {small:.0f} MB at {SMALL:,} rows, {large:.0f} MB at {LARGE:,}"
