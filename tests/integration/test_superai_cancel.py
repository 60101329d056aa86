"""A killed wait cancels the super.ai batch's unfinished jobs: the deferred trigger (Airflow 3.3's
``BaseTrigger.on_kill``) and the poking sensor, both against the super.ai emulator, and both say so in the log."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest

from airflow_batchcode.sensors.batchcode import OperationStatusSensor
from airflow_batchcode.services.superai import SuperAiClient, SuperAiSettings
from airflow_batchcode.triggers.batchcode import OperationStatusTrigger
from tests.support import admin, batchcode_connection, emulator, jsonl_manifest

APP = "5f0c2a9e-7d41-4b8e-a3c6-91e2f4b7d058"
RECORDS = [{"occp_text": f"job {i}", "tasks_text": "work"} for i in range(5)]


def _states(client: SuperAiClient, batch_id: str) -> Counter[str]:
    return Counter(job["state"] for jobs in client.iter_job_pages(batch_id) for job in jobs)


@pytest.mark.parametrize("where", ["trigger", "sensor"])
def test_a_killed_wait_cancels_the_batchs_unfinished_jobs(
    where: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO)
    with emulator("superai", processing_delay=60.0) as server, batchcode_connection(server, app_uuid=APP):
        with SuperAiClient(SuperAiSettings(server.base_url, "demo-key", APP)) as client:
            mine = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS)).operation_id
            other = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:2])).operation_id
            admin(server, "clock", {"advance": 20})
            assert _states(client, mine) == {"SCHEDULED": 5}
            if where == "trigger":
                trigger = OperationStatusTrigger(
                    batchcode_conn_id="batchcode_default", operation_id=mine, topic="anzsco"
                )
                asyncio.run(trigger.on_kill())
            else:
                sensor = OperationStatusSensor(task_id="wait", operation=mine, topic="anzsco", deferrable=False)
                sensor.on_kill()
            assert _states(client, mine) == {"CANCELED": 5}
            assert _states(client, other) == {"SCHEDULED": 2}, "another batch of the app is left alone"
    console = capsys.readouterr()
    logged = caplog.text + console.out + console.err  # Airflow's structlog may write to the console directly
    assert f"cancelled 5 unfinished job(s) of superai operation {mine}" in logged
