"""The nightly pipeline on ASG Refinery: human-consensus labelling of each answer's major group.

Connection ``batchcode_refinery`` (type ``batchcode``): host ``https://api.asgrefinery.io``,
password = the API key, extra::

    {"service": "refinery",
     "manifest_location": "s3://my-bucket/refinery-manifests",   # where manifests are staged
     "storage_conn_id": "aws_default",                            # an Airflow aws connection
     "consensus_threshold": 3,
     "delivery_bucket": "my-results-bucket"}                      # optional: results to S3

Refinery reads each chunk's manifest from object storage with the storage connection's
credentials (sent to Refinery over TLS, never logged); the output table gets the consensus
label, its confidence and the share of workers who agreed (``agreement``).
"""

from __future__ import annotations

from airflow_batchcode.nightly import nightly_dag

dag = nightly_dag(
    "batchcode_refinery_nightly",
    source_table="survey_responses",
    warehouse_conn_id="batchcode_warehouse",
    output_table="coded_occupations_refinery",
    batchcode_conn_id="batchcode_refinery",
    poll_interval=60,
)
