"""Figure 9: code each distinct text once (issue 14): records sent against records in, and a second night.

On the seeded survey answers (the sample generator draws job titles and duties from a realistic
vocabulary, so answers repeat as in a real survey: the share is printed with the figure), the
shipped nightly DAG (``dedupe`` and ``result_cache`` on) codes night 1. Night 2 holds the same
number of answers, 95 % of them texts already coded on night 1 and 5 % new ones; it runs with
the cache (ours) and, as the baseline, coding everything again (``dedupe=False``,
``result_cache=False``), both through ``dag.test()`` in fresh processes against one emulator
process (processing delay 0, no rate limit).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bench.common import Figure, Report, Settings, batchcode_connection, child, emulator, fmt, migrate_metadata_db

NIGHT_ONE, NIGHT_TWO = "2026-01-01", "2026-01-02"
NEW_SHARE = 0.05
DAG = '''"""The shipped nightly pipeline{what}."""
from airflow_batchcode.nightly import nightly_dag

dag = nightly_dag({dag_id!r}, chunk_records={chunk_records}, poll_interval=1, staging={staging!r}, {options})
'''


def _night_two(warehouse: Path) -> None:
    """Copy night 1's answers to night 2 under new ids; give every twentieth a text never seen before."""
    step = round(1 / NEW_SHARE)
    with contextlib.closing(sqlite3.connect(warehouse)) as conn:
        conn.execute(
            "INSERT INTO survey_responses (respondent_id, answered_on, occupation, duties) "
            f"SELECT 'n2-' || respondent_id, '{NIGHT_TWO}', "
            f"CASE WHEN rowid % {step} = 0 THEN occupation || ' (night 2 #' || rowid || ')' ELSE occupation END, "
            f"duties FROM survey_responses WHERE answered_on = '{NIGHT_ONE}'"
        )
        conn.commit()


def _summary(metadata_db: Path, run_id: str, dag_id: str) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(metadata_db)) as conn:
        row = conn.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = 'summary' AND key = 'return_value'",
            (dag_id, run_id),
        ).fetchone()
    value = json.loads(row[0]) if row and row[0] else {}
    return dict(json.loads(value) if isinstance(value, str) else value)


def figure_frugal(report: Report, settings: Settings, work: Path, env: dict[str, str], log: Path, seeded: Path) -> None:
    """Figure 9."""
    folder = work / "frugal"
    dags, staging = folder / "dags", folder / "staging"
    for path in (dags, staging):
        path.mkdir(parents=True, exist_ok=True)
    warehouse = folder / "warehouse.db"
    shutil.copyfile(seeded, warehouse)
    _night_two(warehouse)
    runs = {
        "frugal": ("", "result_cache=True"),
        "again": (", coding everything again", "result_cache=False, dedupe=False"),
    }
    for dag_id, (what, options) in runs.items():
        (dags / f"{dag_id}.py").write_text(
            DAG.format(
                what=what,
                dag_id=dag_id,
                chunk_records=settings.e2e_chunk_records,
                staging=str(staging),
                options=options,
            )
        )
    env = {
        **env,
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW_CONN_BATCHCODE_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(warehouse)}),
    }
    metadata_db = Path(env["AIRFLOW_HOME"]) / "airflow.db"
    migrate_metadata_db(env, log)
    results: dict[str, Any] = {}
    with emulator(log, "--processing-delay", "0") as base_url:
        env["AIRFLOW_CONN_BATCHCODE_DEFAULT"] = batchcode_connection(base_url)
        for name, dag_id, night in (
            ("night_one", "frugal", NIGHT_ONE),
            ("night_two", "frugal", NIGHT_TWO),
            ("night_two_again", "again", NIGHT_TWO),
        ):
            logical = f"{date.fromisoformat(night) + timedelta(days=1)}T00:00:00+00:00"
            run = child(
                "e2e", "dag_test", {"dag_file": str(dags / f"{dag_id}.py"), "logical_date": logical}, env=env, log=log
            )
            if run.result["state"] != "success":
                raise RuntimeError(f"the {name} run ended {run.result['state']}; see {log}")
            results[name] = {"seconds": run.result["seconds"], **_summary(metadata_db, run.result["run_id"], dag_id)}
    one, two, again = (results[k] for k in ("night_one", "night_two", "night_two_again"))
    texts_one, texts_two = one["texts"], two["texts"]
    sent_one = texts_one["sent_batch"] + texts_one["sent_realtime"]
    sent_two = texts_two["sent_batch"] + texts_two["sent_realtime"]
    repeats = 1 - texts_one["distinct_texts"] / max(texts_one["records_in"], 1)
    report.add(
        Figure(
            "frugal_records_sent",
            sent_one / texts_one["records_in"],
            "x",
            f"night 1: {texts_one['records_in']:,} records in, {sent_one:,} sent ({fmt(100 * repeats)} % of the "
            f"answers repeat an earlier answer's texts)",
            details={"night_one": texts_one},
        )
    )
    speedup = again["seconds"] / two["seconds"]
    report.add(
        Figure(
            "frugal_second_night",
            speedup,
            "x",
            f"night 2 ({fmt(100 * NEW_SHARE)} % new answers): {fmt(two['seconds'])} s sending {sent_two:,} records "
            f"with the cache ({texts_two['from_cache']:,} distinct texts from it), against "
            f"{fmt(again['seconds'])} s coding all {again['texts']['records_in']:,} again",
            details={
                "night_two": texts_two,
                "again": again["texts"],
                "seconds": {k: v["seconds"] for k, v in results.items()},
            },
        )
    )
