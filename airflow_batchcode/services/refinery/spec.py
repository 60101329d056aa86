"""ASG Refinery batch jobs in the catalogue (:mod:`airflow_batchcode.services.catalogue`)."""

from __future__ import annotations

from airflow_batchcode.services.catalogue import ServiceSpec, form_field

SPEC = ServiceSpec(
    name="refinery",
    label="ASG Refinery",
    doc_url="https://asgrefinery.io/",
    connection_fields={
        "manifest_location": form_field(
            "Manifest location", "s3://bucket/prefix where manifests are staged for Refinery to read."
        ),
        "storage_conn_id": form_field(
            "Storage connection", "Airflow aws connection whose credentials stage manifests (Refinery)."
        ),
        "delivery_bucket": form_field(
            "Delivery bucket", "S3 bucket Refinery delivers results to instead of the export call (optional)."
        ),
    },
    emulator_connection={"password": "demo-key"},
    object_storage=True,
)
