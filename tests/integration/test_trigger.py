"""OperationStatusTrigger.run() against the emulator over loopback, as the triggerer runs it."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import pytest

from airflow_batchcode.services.abs import AbsClient, AbsSettings
from airflow_batchcode.triggers.batchcode import OperationStatusTrigger
from tests.support import admin, batchcode_connection, emulator


def events(trigger: OperationStatusTrigger) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def start_operation(server: Any, body: bytes | None) -> str:
    with AbsClient(AbsSettings(server.base_url, "demo-client", "demo-secret", rate_limit=0)) as client:
        target = client.create_operation("anzsco")
        if body is not None:
            client.upload_manifest(target, io.BytesIO(body))
        return target.operation_id


def trigger(operation_id: str, **kwargs: Any) -> OperationStatusTrigger:
    settings: dict[str, Any] = {"poll_interval": 0.5, "deadline": time.time() + 60}
    settings.update(kwargs)
    return OperationStatusTrigger(
        batchcode_conn_id="batchcode_default", operation_id=operation_id, topic="anzsco", **settings
    )


GOOD = b'{"occp_text": "chef", "tasks_text": "cooking"}\n'
MIXED = b'{"recordId": "1", "occp_text": "a", "tasks_text": ""}\n{"occp_text": "b", "tasks_text": ""}\n'


def test_complete_yields_exactly_one_event() -> None:
    # long enough that the first poll finds it still in progress on a loaded 2-core CI machine (with
    # 1.0 s, a CI run saw the upload-to-first-poll gap exceed the delay: polls == 1)
    with emulator(processing_delay=3.0) as server, batchcode_connection(server):
        (event,) = events(trigger(start_operation(server, GOOD)))
    assert event["status"] == "complete" and event["polls"] >= 2
    assert "://" not in json.dumps(event), "no URL travels in the event"


def test_failed_carries_the_services_message() -> None:
    with emulator() as server, batchcode_connection(server):
        operation_id = start_operation(server, MIXED)
        (event,) = events(trigger(operation_id))
    polls, message = event.pop("polls"), event.pop("message")
    assert event == {"status": "failed", "operation_id": operation_id, "topic": "anzsco", "reason": "service"}
    assert isinstance(polls, int) and polls >= 1
    assert isinstance(message, str) and "same fields" in message


def test_timed_out_operation_and_our_own_deadline() -> None:
    with emulator(awaiting_timeout=600) as server, batchcode_connection(server):
        waiting = start_operation(server, None)
        started = time.monotonic()
        (deadline_event,) = events(trigger(waiting, deadline=time.time() + 1.2))
        assert time.monotonic() - started < 5
        admin(server, "clock", {"advance": 601})
        (service_event,) = events(trigger(waiting))
    assert deadline_event["status"] == "timed_out" and deadline_event["reason"] == "deadline"
    assert "awaiting_input" in deadline_event["message"]
    assert service_event["status"] == "timed_out" and service_event["reason"] == "service"


def test_transient_5xx_and_429_runs_are_waited_out() -> None:
    with (
        emulator(
            processing_delay=1.0,
            fault_5xx_rate=0.5,
            fault_429_rate=0.2,
            fault_retry_after=0,
            fault_only=r"^GET .*/operations/",
            seed=11,
        ) as server,
        batchcode_connection(server, max_attempts=2),
    ):
        operation_id = start_operation(server, GOOD)
        (event,) = events(trigger(operation_id))
        injected = admin(server, "stats")["faults"]
    assert event["status"] == "complete"
    assert sum(injected.values()) >= 2


def test_a_bounded_run_of_failures_ends_in_an_error_event() -> None:
    with (
        emulator(fault_5xx_rate=1.0, fault_only=r"^GET .*/operations/") as server,
        batchcode_connection(server, max_attempts=1),
    ):
        operation_id = start_operation(server, GOOD)
        (event,) = events(trigger(operation_id, max_consecutive_errors=3))
    assert event["status"] == "error" and "3 in a row" in event["message"]


def test_another_tenants_operation_is_an_error_event_not_a_crash() -> None:
    clients = {"demo-client": "demo-secret", "other": "other-secret"}
    with emulator(clients=clients) as server:
        operation_id = start_operation(server, None)
        with batchcode_connection(server, client_id="other", secret="other-secret"):
            (event,) = events(trigger(operation_id))
    assert event["status"] == "error" and "does not exist" in event["message"]


def test_serialize_round_trips_plain_values_and_a_rebuilt_trigger_resumes() -> None:
    # The operation completes only when the test moves the emulator's clock: the interrupted run
    # cannot finish early on a slow machine, whatever the pause before it is cancelled.
    with emulator(processing_delay=600) as server, batchcode_connection(server):
        original = trigger(start_operation(server, GOOD), deadline=time.time() + 30)
        path, kwargs = original.serialize()
        assert path == "airflow_batchcode.triggers.batchcode.OperationStatusTrigger"
        assert json.loads(json.dumps(kwargs)) == kwargs, "plain JSON values only"

        async def interrupted() -> None:
            agen = original.run()
            task = asyncio.ensure_future(agen.__anext__())
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await agen.aclose()

        asyncio.run(interrupted())
        rebuilt = OperationStatusTrigger(**kwargs)
        assert rebuilt.deadline == original.deadline, "a restart keeps the wall-clock deadline"
        admin(server, "clock", {"advance": 601})
        (event,) = events(rebuilt)
    assert event["status"] == "complete"


def test_poll_interval_floor() -> None:
    assert trigger("op", poll_interval=0.01).poll_interval == 0.5
