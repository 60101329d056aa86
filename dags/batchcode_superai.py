"""The nightly pipeline on a super.ai data program that codes occupations.

Connection ``batchcode_superai`` (type ``batchcode``): host ``https://api.super.ai``, password =
the API key, extra ``{"service": "superai", "app_uuid": "<your data program's uuid>"}``.

super.ai takes inputs inline (at most 4 MB per request), so chunks are kept to 10,000 answers;
each answer becomes one super.ai job, and the output table keeps its job id (``item_id``).
Inputs super.ai rejects are reported per record, not fatal.
"""

from __future__ import annotations

from airflow_batchcode.nightly import nightly_dag

dag = nightly_dag(
    "batchcode_superai_nightly",
    source_table="survey_responses",
    warehouse_conn_id="batchcode_warehouse",
    output_table="coded_occupations_superai",
    batchcode_conn_id="batchcode_superai",
    chunk_records=10_000,
    poll_interval=60,
)
