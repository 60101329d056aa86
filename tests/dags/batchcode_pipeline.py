"""Test DAG: the reusable pipeline over a SQLite or PostgreSQL warehouse, configured by environment.

``BATCHCODE_TEST_WAREHOUSE`` names the warehouse connection, ``BATCHCODE_TEST_STAGING`` the
staging folder (empty or unset: the default, ``$AIRFLOW_HOME/batchcode``), ``BATCHCODE_TEST_CHUNK``
the records per chunk, ``BATCHCODE_TEST_SANITIZE`` whether to sanitise, ``BATCHCODE_TEST_MIN_SUCCESS`` the quality gate and
``BATCHCODE_TEST_RETRIES`` the task retries and ``BATCHCODE_TEST_POLL`` the poll interval.
``BATCHCODE_TEST_COLUMNAR`` (default off), ``BATCHCODE_TEST_DEDUPE`` (default on), ``BATCHCODE_TEST_CACHE`` (default off) and
``BATCHCODE_TEST_REALTIME`` (``realtime_max_records``; default 0, so that the tests of remote operations get them)
set the frugal-coding options; ``BATCHCODE_TEST_MODEL`` names a model (default the latest).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk.definitions.timetables.interval import CronDataIntervalTimetable

from airflow_batchcode.dags import coding_dag

pipeline = coding_dag(
    "pipeline_test",
    source_conn_id=os.environ.get("BATCHCODE_TEST_WAREHOUSE", "test_warehouse"),
    source_sql=(
        "SELECT respondent_id, occupation, duties FROM survey_responses "
        "WHERE answered_on >= '{{ data_interval_start.strftime('%Y-%m-%d') }}' "
        "AND answered_on < '{{ data_interval_end.strftime('%Y-%m-%d') }}' ORDER BY respondent_id"
    ),
    field_map={"record_id": "respondent_id", "occp_text": "occupation", "tasks_text": "duties"},
    output_conn_id=os.environ.get("BATCHCODE_TEST_WAREHOUSE", "test_warehouse"),
    output_table="coded_responses",
    chunk_records=int(os.environ.get("BATCHCODE_TEST_CHUNK", "100")),
    poll_interval=float(os.environ.get("BATCHCODE_TEST_POLL", "0.5")),
    staging=os.environ.get("BATCHCODE_TEST_STAGING") or None,
    sanitize=os.environ.get("BATCHCODE_TEST_SANITIZE") == "1",
    columnar=os.environ.get("BATCHCODE_TEST_COLUMNAR") == "1",
    dedupe=os.environ.get("BATCHCODE_TEST_DEDUPE", "1") == "1",
    result_cache=os.environ.get("BATCHCODE_TEST_CACHE") == "1",
    realtime_max_records=int(os.environ.get("BATCHCODE_TEST_REALTIME", "0")),
    model=os.environ.get("BATCHCODE_TEST_MODEL") or None,
    min_success_rate=float(os.environ["BATCHCODE_TEST_MIN_SUCCESS"])
    if "BATCHCODE_TEST_MIN_SUCCESS" in os.environ
    else None,
    default_args={
        "retries": int(os.environ.get("BATCHCODE_TEST_RETRIES", "0")),
        "retry_delay": timedelta(seconds=0),
    },
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
)
