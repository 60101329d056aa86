"""Trigger decisions with a scripted async client at the hook boundary."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from airflow_batchcode.exceptions import NotFoundError, ServerError
from airflow_batchcode.hooks.batchcode import BatchCodeHook
from airflow_batchcode.services.base import Operation, OperationState
from airflow_batchcode.services.registry import ServiceConfig
from airflow_batchcode.triggers.batchcode import OperationStatusTrigger


class ScriptedClient:
    """Answers status calls from a script of states or exceptions."""

    service = "abs"

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.closed = False

    async def get_operation(self, operation_id: str, topic: str, model: str | None = None) -> Operation:
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return Operation(operation_id, step)

    async def aclose(self) -> None:
        self.closed = True


def run(monkeypatch: pytest.MonkeyPatch, script: list[Any], **kwargs: Any) -> tuple[dict[str, Any], ScriptedClient]:
    client = ScriptedClient(script)

    async def fake_config(self: BatchCodeHook) -> ServiceConfig:
        return ServiceConfig("abs", "https://abs.example")

    async def fake_client(self: BatchCodeHook, config: ServiceConfig | None = None) -> ScriptedClient:
        return client

    monkeypatch.setattr(BatchCodeHook, "aget_config", fake_config)
    monkeypatch.setattr(BatchCodeHook, "get_async_client", fake_client)
    trigger = OperationStatusTrigger(
        batchcode_conn_id="c", operation_id="op-1", topic="anzsco", poll_interval=0.5, **kwargs
    )
    monkeypatch.setattr("airflow_batchcode.triggers.batchcode.MIN_POLL_INTERVAL", 0.0)
    trigger.poll_interval = 0.01

    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    (event,) = asyncio.run(collect())
    return event, client


def test_a_status_going_backwards_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    event, client = run(monkeypatch, [OperationState.IN_PROGRESS, OperationState.AWAITING_INPUT])
    assert event["status"] == "error" and "backwards, from in_progress to awaiting_input" in event["message"]
    assert client.closed


def test_transient_errors_then_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    script = [ServerError("x", status_code=500), OperationState.IN_PROGRESS, ServerError("y", status_code=503)]
    event, _ = run(monkeypatch, [*script, OperationState.COMPLETE])
    assert event["status"] == "complete" and event["polls"] == 4


def test_a_not_found_is_final_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    event, _ = run(monkeypatch, [NotFoundError("gone", status_code=404), OperationState.COMPLETE])
    assert event["status"] == "error" and "1 in a row" in event["message"]


def test_a_passed_deadline_ends_without_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    event, client = run(monkeypatch, [OperationState.COMPLETE], deadline=time.time() - 1)
    assert event["status"] == "timed_out" and event["reason"] == "deadline" and client.script
