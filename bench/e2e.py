"""Figure 6: the nightly DAG end to end through ``dag.test()``, against the naive PythonOperator,
on the sample answers (they repeat, as survey answers do) and on the same answers made all-distinct.

Both run in fresh processes (peak RSS from ``os.wait4``) on the same SQLite warehouse, against
the same emulator process (processing delay 0, no rate limit), with the same temporary
``AIRFLOW_HOME`` and a 1 s poll interval. Ours uses 250,000-record chunks.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import (
    Figure,
    Report,
    Settings,
    batchcode_connection,
    child,
    child_main,
    emulator,
    fmt,
    migrate_metadata_db,
)

DAY = "2026-01-01"
LOGICAL_DATE = "2026-01-02T00:00:00+00:00"
OURS_DAG = '''"""The shipped nightly pipeline, with the benchmark's chunking and polling."""
from airflow_batchcode.nightly import nightly_dag

dag = nightly_dag(
    "bench_nightly", chunk_records={chunk_records}, poll_interval=1, staging={staging!r}, columnar={columnar}
)
'''
NAIVE_DAG = '''"""The naive baseline: one PythonOperator doing everything in memory."""
from datetime import datetime

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG
from airflow.sdk.definitions.timetables.interval import CronDataIntervalTimetable

from bench.naive import naive_code

with DAG(
    "bench_naive",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
) as dag:
    PythonOperator(task_id="code", python_callable=naive_code)
'''
STEPS = ["extract", "chunks", "create", "upload", "wait", "download", "load", "summary"]


def dag_test(dag_file: str, logical_date: str = LOGICAL_DATE) -> dict[str, Any]:
    """Child: load the DAG file and run it once with ``dag.test()`` (the night before ``logical_date``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(dag_file).stem, dag_file)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    started = time.perf_counter()
    run = module.dag.test(logical_date=datetime.fromisoformat(logical_date))
    return {"seconds": time.perf_counter() - started, "state": str(run.state), "run_id": run.run_id}


def step_times(metadata_db: Path, dag_id: str) -> dict[str, float]:
    """Seconds per step (summed over mapped chunks) from the task instances' start and end."""
    with contextlib.closing(sqlite3.connect(metadata_db)) as conn:
        rows = conn.execute(
            "SELECT task_id, start_date, end_date FROM task_instance "
            "WHERE dag_id = ? AND start_date IS NOT NULL AND end_date IS NOT NULL",
            (dag_id,),
        ).fetchall()
    spent: dict[str, float] = {}
    for task_id, start, end in rows:
        seconds = (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))).total_seconds()
        step = task_id.split(".")[-1]
        spent[step] = round(spent.get(step, 0.0) + seconds, 2)
    return {step: spent[step] for step in STEPS if step in spent} | {k: v for k, v in spent.items() if k not in STEPS}


def make_distinct(warehouse: Path) -> int:
    """Make every answer's texts distinct (the respondent id appended to its duties, or to its title
    when it has no duties), so de-duplication and the result cache save nothing; return how many
    distinct (title, duties) pairs the warehouse then holds."""
    with contextlib.closing(sqlite3.connect(warehouse)) as conn, conn:
        conn.execute(
            "UPDATE survey_responses SET duties = duties || ' (' || respondent_id || ')' "
            "WHERE duties IS NOT NULL AND TRIM(duties) <> ''"
        )
        conn.execute(
            "UPDATE survey_responses SET occupation = occupation || ' (' || respondent_id || ')' "
            "WHERE (duties IS NULL OR TRIM(duties) = '') AND occupation IS NOT NULL AND TRIM(occupation) <> ''"
        )
        return int(
            conn.execute("SELECT COUNT(*) FROM (SELECT DISTINCT occupation, duties FROM survey_responses)").fetchone()[
                0
            ]
        )


def _race(
    report: Report,
    settings: Settings,
    work: Path,
    env: dict[str, str],
    log: Path,
    seeded: Path,
    *,
    distinct: bool,
    columnar: bool = False,
) -> None:
    """Ours (``columnar=True``: on the Arrow path) and the naive DAG, one after the other, on a copy of
    ``seeded`` (made all-distinct when asked), in an Airflow home of their own; adds the race's three figures."""
    name, data = ("e2e_distinct", "all-distinct answers") if distinct else ("e2e", "the sample answers")
    if columnar:
        name, data = name.replace("e2e", "e2e_arrow"), f"{data}, columnar=True"
    folder = work / name.replace("_", "-")
    dags, staging, home = folder / "dags", folder / "staging", folder / "airflow"
    for path in (dags, staging, home):
        path.mkdir(parents=True, exist_ok=True)
    warehouse = folder / "warehouse.db"
    shutil.copyfile(seeded, warehouse)
    texts = make_distinct(warehouse) if distinct else None
    (dags / "bench_nightly.py").write_text(
        OURS_DAG.format(chunk_records=settings.e2e_chunk_records, staging=str(staging), columnar=columnar)
    )
    (dags / "bench_naive.py").write_text(NAIVE_DAG)
    naive_times = folder / "naive-times.json"
    env = {
        **env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW_CONN_BATCHCODE_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(warehouse)}),
        "BENCH_NAIVE_TIMES": str(naive_times),
    }
    migrate_seconds = migrate_metadata_db(env, log)
    with emulator(log, "--processing-delay", "0") as base_url:
        env["AIRFLOW_CONN_BATCHCODE_DEFAULT"] = batchcode_connection(base_url)
        ours = child("e2e", "dag_test", {"dag_file": str(dags / "bench_nightly.py")}, env=env, log=log, timeout=3000)
        naive = child("e2e", "dag_test", {"dag_file": str(dags / "bench_naive.py")}, env=env, log=log, timeout=3000)
    for who, run in (("ours", ours), ("naive", naive)):
        if run.result["state"] != "success":
            raise RuntimeError(f"the {who} DAG run ended {run.result['state']}; see {log}")
    with contextlib.closing(sqlite3.connect(warehouse)) as conn:
        ours_rows = conn.execute("SELECT COUNT(*) FROM coded_occupations").fetchone()[0]
        naive_rows = conn.execute("SELECT COUNT(*) FROM naive_coded").fetchone()[0]
    steps = step_times(home / "airflow.db", "bench_nightly")
    naive_steps = json.loads(naive_times.read_text())
    speedup = naive.result["seconds"] / ours.result["seconds"]
    split = ", ".join(f"{step} {fmt(seconds)}" for step, seconds in steps.items())
    naive_split = ", ".join(f"{k} {fmt(v)}" for k, v in naive_steps.items() if k != "rows")
    details = {
        "ours_steps_s": steps,
        "naive_phases_s": naive_steps,
        "ours_rows": ours_rows,
        "naive_rows": naive_rows,
        "db_migrate_s": migrate_seconds,
    }
    if texts is not None:
        details["distinct_texts"] = texts
    report.add(
        Figure(
            f"{name}_seconds",
            ours.result["seconds"],
            "s",
            f"naive {fmt(naive.result['seconds'])} s; {settings.e2e_records:,} records ({data}); "
            f"ours by step (s): {split}; naive by phase (s): {naive_split}",
            details=details,
        )
    )
    report.add(
        Figure(
            f"{name}_speedup",
            speedup,
            "x",
            f"naive PythonOperator {fmt(naive.result['seconds'])} s vs ours {fmt(ours.result['seconds'])} s, on {data}",
            goal=">= 5",
            met=speedup >= 5,
        )
    )
    share = ours.peak_rss_mb / naive.peak_rss_mb
    report.add(
        Figure(
            f"{name}_peak_rss",
            ours.peak_rss_mb,
            "MB",
            f"naive {fmt(naive.peak_rss_mb)} MB (ours is {fmt(share * 100)} % of it), on {data}",
            goal="a fraction of naive",
            met=share < 0.5,
        )
    )


def figure_e2e(report: Report, settings: Settings, work: Path, env: dict[str, str], log: Path, seeded: Path) -> None:
    """Figure 6, on the sample data (its answers repeat, as survey answers do) and on the same
    answers made all-distinct (no help from de-duplication); each on the default and the Arrow path."""
    for columnar in (False, True):
        for distinct in (False, True):
            _race(report, settings, work, env, log, seeded, distinct=distinct, columnar=columnar)


if __name__ == "__main__":
    child_main({"dag_test": dag_test})
