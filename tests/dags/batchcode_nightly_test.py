"""Test DAG: the shipped nightly DAG (:func:`airflow_batchcode.nightly.nightly_dag`) over the test warehouse.

``BATCHCODE_TEST_STAGING`` names the staging folder and ``BATCHCODE_TEST_COLUMNAR=1`` takes the Arrow
path; remote operations only (``realtime_max_records=0``).
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow_batchcode.nightly import nightly_dag

dag = nightly_dag(
    "nightly_test",
    warehouse_conn_id="test_warehouse",
    source_table="survey_responses",
    output_table="coded_nightly",
    staging=os.environ.get("BATCHCODE_TEST_STAGING") or None,
    poll_interval=0.5,
    realtime_max_records=0,
    columnar=os.environ.get("BATCHCODE_TEST_COLUMNAR") == "1",
    default_args={"retries": 0, "retry_delay": timedelta(seconds=0)},
)
