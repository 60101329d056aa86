"""The nightly coding pipeline (see ``airflow_batchcode.nightly``): copy this file and adjust the arguments."""

from __future__ import annotations

from airflow_batchcode.nightly import nightly_dag

dag = nightly_dag(
    "batchcode_nightly",
    source_table="survey_responses",
    warehouse_conn_id="batchcode_warehouse",
    output_table="coded_occupations",
    batchcode_conn_id="batchcode_default",
)  # polls at the service's advice (ABS: every 600 s), stretched further by the account's request budget
