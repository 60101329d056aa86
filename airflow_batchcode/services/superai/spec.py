"""super.ai job batches in the catalogue (:mod:`airflow_batchcode.services.catalogue`)."""

from __future__ import annotations

from airflow_batchcode.services.catalogue import ServiceSpec, form_field

SPEC = ServiceSpec(
    name="superai",
    label="super.ai",
    doc_url="https://super.ai/",
    classes="SuperAi",
    connection_fields={
        "app_uuid": form_field("super.ai app UUID", "The super.ai data program jobs are created in (super.ai only)."),
    },
    # one request per job's response: no client-side limit against the local emulator
    emulator_connection={
        "password": "demo-key",
        "extra": {"app_uuid": "6c1f4b1e-2a57-4d8e-9b3a-0d5e8f7a9c21", "rate_limit": 0},
    },
    cancel=True,
    max_input_bytes=4 * 1024 * 1024,  # inline inputs of at most 4 MB
)
