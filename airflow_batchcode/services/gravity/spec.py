"""Gravity-AI on-demand jobs in the catalogue (:mod:`airflow_batchcode.services.catalogue`)."""

from __future__ import annotations

from airflow_batchcode.services.catalogue import ServiceSpec, form_field

SPEC = ServiceSpec(
    name="gravity",
    label="Gravity-AI",
    doc_url="https://www.gravity-ai.com/",
    connection_fields={
        "version": form_field("Model version", "Gravity-AI project version; the latest active one when empty."),
    },
    emulator_connection={"password": "demo-key"},
)
