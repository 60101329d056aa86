"""The nightly pipeline on a Gravity-AI hosted on-demand model.

Connection ``batchcode_gravity`` (type ``batchcode``): host ``https://on-demand.gravity-ai.com``,
password = the API key, extra ``{"service": "gravity"}`` and optionally ``"version"`` (the model
project's version), ``"mapping"`` and ``"output_mapping"`` (lists of ``{source, destination,
defaultValue}``) when your model's field names differ from ``job_title``/``duties`` in and
``code``/``label``/``confidence``/``error`` out.

Each chunk is posted as one CSV job; the run summary adds up Gravity's billed usage in dollars.
"""

from __future__ import annotations

from airflow_batchcode.nightly import nightly_dag

dag = nightly_dag(
    "batchcode_gravity_nightly",
    source_table="survey_responses",
    warehouse_conn_id="batchcode_warehouse",
    output_table="coded_occupations_gravity",
    batchcode_conn_id="batchcode_gravity",
    chunk_records=50_000,
    poll_interval=30,
)
