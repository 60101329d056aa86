"""The ABS Occupation Coding Service in the catalogue (:mod:`airflow_batchcode.services.catalogue`)."""

from __future__ import annotations

from airflow_batchcode.services.catalogue import ServiceSpec, form_field

SPEC = ServiceSpec(
    name="abs",
    label="ABS",
    title="ABS Occupation Coding Service",
    doc_url="https://www.abs.gov.au/",
    emulator="airflow_batchcode.emulator.abs_app:create_abs_app",
    connection_fields={
        "auth_url": form_field("Token URL", "OAuth2 token endpoint; derived from the API origin when empty."),
    },
    emulator_connection={"login": "demo-client", "password": "demo-secret"},
    uses_login=True,
    realtime_batch=300,  # "one record or up to 300"
    lists_models=True,
    input_rules="airflow_batchcode.services.rules:ABS_RULES",
    column_limits="airflow_batchcode.columnar.rules:ABS_LIMITS",
    poll_interval=600.0,  # the seed: check "up to once every ten minutes"
)
