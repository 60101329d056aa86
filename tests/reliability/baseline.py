"""Fault runs checked against a fault-free run of the same data.

A fault test codes its warehouse once with faults and once without (on another day's copy of
the same records, so the two runs share no Airflow run and no operation), then requires both to
code every record the same way: the same multiset of ``(position, record_id, code_status,
code_category)``. Positions alone would prove little: they come from the pipeline's own sidecar.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path

from airflow_batchcode.sample_data import seed_sqlite

BASELINE_DAY = "2026-01-02"
"""The day the fault-free copy is dated: the test pipeline's run id follows the day."""

Coded = tuple[int, str, str, str | None]
"""One output row as compared: (position, record_id, code_status, code_category)."""


def baseline_warehouse(tmp_path: Path, records: int, *, messy: bool = True) -> Path:
    """The same records as :func:`tests.support.sqlite_warehouse` makes, dated :data:`BASELINE_DAY`,
    in their own SQLite file (connection ``test_warehouse`` then points at it)."""
    folder = tmp_path / "baseline"
    folder.mkdir(exist_ok=True)
    path = folder / "warehouse.db"
    os.environ["AIRFLOW_CONN_TEST_WAREHOUSE"] = json.dumps({"conn_type": "sqlite", "host": str(path)})
    seed_sqlite(str(path), records, start=BASELINE_DAY, messy=messy)
    return path


def coded(path: Path) -> list[Coded]:
    """The output table's rows as compared with the baseline."""
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT position, record_id, code_status, code_category FROM coded_responses").fetchall()
    return [(int(p), str(r), str(s), c) for p, r, s, c in rows]


def assert_same_as_baseline(faulty: list[Coded], clean: list[Coded], *, max_differing: int = 0) -> int:
    """Require the fault run to code every record as the fault-free run did.

    The only rows allowed to differ are records that one of the two runs reports as ``error``
    (the service fails a share of records by a hash that may include the operation's id), at most
    ``max_differing`` of them. Returns how many differ.
    """
    got = {position: (record_id, status, category) for position, record_id, status, category in faulty}
    want = {position: (record_id, status, category) for position, record_id, status, category in clean}
    assert len(want) == len(clean) > 0, "the fault-free run coded each record once"
    assert len(got) == len(faulty), "the fault run coded each record once"
    assert sorted(got) == sorted(want), "both runs coded the same positions"
    differ = [(p, want[p], got[p]) for p in sorted(want) if got[p] != want[p]]
    unexplained = [d for d in differ if d[1][0] != d[2][0] or "error" not in (d[1][1], d[2][1])]
    assert unexplained == [], f"(position, fault-free, fault run) coded differently: {unexplained[:10]}"
    assert len(differ) <= max_differing, (
        f"{len(differ)} records differ from the fault-free run (at most {max_differing} expected): {differ[:10]}"
    )
    return len(differ)


def error_count(rows: Iterable[Coded]) -> int:
    """How many rows are per-record errors."""
    return sum(1 for row in rows if row[2] == "error")


def bound(rate: float, records: int) -> int:
    """A generous upper bound on how many of ``records`` a per-record failure ``rate`` fails:
    twice the expectation plus ten (the emulator picks them by a hash, not at random per run)."""
    return int(2 * rate * records) + 10
