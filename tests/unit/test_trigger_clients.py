"""Triggers of one connection on one event loop share its async client (airflow_batchcode.triggers.clients)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from airflow_batchcode.exceptions import NotFoundError, ServerError
from airflow_batchcode.hooks.batchcode import BatchCodeHook
from airflow_batchcode.services.base import Operation, OperationState
from airflow_batchcode.services.registry import ServiceConfig
from airflow_batchcode.triggers import clients
from airflow_batchcode.triggers.batchcode import OperationStatusTrigger


class FakeClient:
    """Answers each operation's status calls from its own script; an operation with a gate waits on it first."""

    service = "abs"

    def __init__(self, config: ServiceConfig, scripts: dict[str, list[Any]], gates: dict[str, asyncio.Event]) -> None:
        self.config = config
        self.scripts = scripts
        self.gates = gates
        self.closed = 0
        self.polls: list[str] = []

    async def get_operation(self, operation_id: str, topic: str, model: str | None = None) -> Operation:
        assert not self.closed, "a closed client was used"
        if operation_id in self.gates:
            await self.gates[operation_id].wait()
        self.polls.append(operation_id)
        step = self.scripts[operation_id].pop(0)
        if isinstance(step, Exception):
            raise step
        return Operation(operation_id, step)

    async def aclose(self) -> None:
        self.closed += 1


class Connections:
    """The Airflow connections the hook reads, and every client built from them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.configs: dict[str, ServiceConfig | Exception] = {
            "one": ServiceConfig("abs", "https://one.example", "id", "secret-1"),
            "two": ServiceConfig("abs", "https://two.example", "id", "secret-2"),
        }
        self.reads: list[str] = []
        self.built: list[FakeClient] = []
        self.scripts: dict[str, list[Any]] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.read_gate: asyncio.Event | None = None
        connections = self

        async def aget_config(hook: BatchCodeHook) -> ServiceConfig:
            connections.reads.append(hook.batchcode_conn_id)
            await asyncio.sleep(0)  # a read takes a turn of the loop: triggers starting meanwhile wait for it
            if connections.read_gate is not None:
                await connections.read_gate.wait()
            config = connections.configs[hook.batchcode_conn_id]
            if isinstance(config, Exception):
                raise config
            return config

        async def get_async_client(hook: BatchCodeHook, config: ServiceConfig | None = None) -> FakeClient:
            assert config is not None
            client = FakeClient(config, connections.scripts, connections.gates)
            connections.built.append(client)
            return client

        monkeypatch.setattr(BatchCodeHook, "aget_config", aget_config)
        monkeypatch.setattr(BatchCodeHook, "get_async_client", get_async_client)
        monkeypatch.setattr("airflow_batchcode.triggers.batchcode.MIN_POLL_INTERVAL", 0.0)
        monkeypatch.setattr("airflow_batchcode.triggers.batchcode.START_SPREAD_SECONDS", 0.0)

    def trigger(self, operation_id: str, script: list[Any], conn_id: str = "one") -> OperationStatusTrigger:
        self.scripts[operation_id] = list(script)
        trigger = OperationStatusTrigger(batchcode_conn_id=conn_id, operation_id=operation_id, topic="anzsco")
        trigger.poll_interval = 0.001
        return trigger


async def events(trigger: OperationStatusTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


IN_PROGRESS, COMPLETE = OperationState.IN_PROGRESS, OperationState.COMPLETE


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> Connections:
    return Connections(monkeypatch)


def test_triggers_of_one_connection_share_one_client_and_the_last_to_end_closes_it(connections: Connections) -> None:
    async def main() -> None:
        connections.gates["b"] = asyncio.Event()
        first = asyncio.create_task(events(connections.trigger("a", [IN_PROGRESS, COMPLETE])))
        second = asyncio.create_task(events(connections.trigger("b", [IN_PROGRESS, IN_PROGRESS, COMPLETE])))
        (event,) = await first
        assert event["status"] == "complete"
        (client,) = connections.built
        assert not client.closed, "closed while the other trigger still waits"
        assert clients.shared_client_count(asyncio.get_running_loop()) == 1
        connections.gates["b"].set()
        (event,) = await second
        assert event["status"] == "complete" and event["polls"] == 3
        assert client.closed == 1
        assert clients.shared_client_count(asyncio.get_running_loop()) == 0

    asyncio.run(main())
    assert connections.reads == ["one"], "the connection is read once, not once per trigger"
    assert sorted(connections.built[0].polls) == ["a", "a", "b", "b", "b"]


def test_a_failing_trigger_does_not_close_the_client_of_the_others(connections: Connections) -> None:
    async def main() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(
            events(connections.trigger("gone", [NotFoundError("no such operation", status_code=404)])),
            events(connections.trigger("ok", [IN_PROGRESS, IN_PROGRESS, IN_PROGRESS, COMPLETE])),
            events(connections.trigger("flaky", [ServerError("x", status_code=503), IN_PROGRESS, COMPLETE])),
        )

    (gone,), (ok,), (flaky,) = asyncio.run(main())
    assert gone["status"] == "error" and "no such operation" in gone["message"]
    assert ok["status"] == "complete" and ok["polls"] == 4
    assert flaky["status"] == "complete" and flaky["polls"] == 3
    (client,) = connections.built
    assert client.closed == 1


def test_a_cancelled_trigger_gives_its_share_back(connections: Connections) -> None:
    async def main() -> None:
        connections.gates["stuck"] = asyncio.Event()
        stuck = asyncio.create_task(events(connections.trigger("stuck", [COMPLETE])))
        other = asyncio.create_task(events(connections.trigger("other", [IN_PROGRESS, COMPLETE])))
        await asyncio.sleep(0.05)
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        (event,) = await other
        assert event["status"] == "complete"

    asyncio.run(main())
    (client,) = connections.built
    assert client.closed == 1


def test_other_connections_and_other_loops_get_their_own_clients(connections: Connections) -> None:
    async def main() -> None:
        await asyncio.gather(
            events(connections.trigger("a", [IN_PROGRESS, COMPLETE], conn_id="one")),
            events(connections.trigger("b", [IN_PROGRESS, COMPLETE], conn_id="two")),
        )

    asyncio.run(main())
    asyncio.run(main())
    assert [client.config.base_url for client in connections.built] == [
        "https://one.example",
        "https://two.example",
    ] * 2
    assert all(client.closed == 1 for client in connections.built)


def test_a_failed_read_fails_the_triggers_waiting_on_it_and_is_not_kept(connections: Connections) -> None:
    connections.configs["one"] = RuntimeError("the secrets backend is down")

    async def main() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(*(events(connections.trigger(f"op-{n}", [COMPLETE])) for n in range(3)))

    for (event,) in asyncio.run(main()):
        assert event["status"] == "error"
        assert event["message"] == (
            "Cannot build a client for connection 'one': RuntimeError: the secrets backend is down"
        )
    assert connections.reads == ["one"] and not connections.built
    connections.configs["one"] = ServiceConfig("abs", "https://one.example")

    async def again() -> list[dict[str, Any]]:
        return await events(connections.trigger("later", [COMPLETE]))

    (event,) = asyncio.run(again())
    assert event["status"] == "complete" and connections.reads == ["one", "one"]


def test_an_edited_connection_reaches_new_triggers_and_running_ones_keep_theirs(
    connections: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clients, "RECHECK_SECONDS", 0.0)  # every new trigger reads the connection again

    async def main() -> None:
        connections.gates["old"] = asyncio.Event()
        old = asyncio.create_task(events(connections.trigger("old", [IN_PROGRESS, COMPLETE])))
        same = asyncio.create_task(events(connections.trigger("same", [IN_PROGRESS, COMPLETE])))
        await same
        assert len(connections.built) == 1, "an unchanged connection keeps its client"
        edited = connections.configs["one"]
        assert isinstance(edited, ServiceConfig)
        connections.configs["one"] = dataclasses.replace(edited, password="rotated")
        (event,) = await events(connections.trigger("new", [IN_PROGRESS, COMPLETE]))
        assert event["status"] == "complete"
        first, second = connections.built
        assert second.config.password == "rotated" and second.polls == ["new", "new"]
        assert second.closed == 1 and not first.closed, "the old client stays with the trigger still holding it"
        connections.gates["old"].set()
        await old
        assert first.closed == 1 and first.polls.count("old") == 2

    asyncio.run(main())


def test_the_connection_is_not_read_again_within_the_recheck_time(connections: Connections) -> None:
    async def main() -> None:
        held = await clients.acquire("one")
        for _ in range(5):
            again = await clients.acquire("one")
            assert again is held
            await clients.release(again)
        assert not held.client.closed  # type: ignore[attr-defined]
        await clients.release(held)
        assert held.client.closed == 1  # type: ignore[attr-defined]

    asyncio.run(main())
    assert connections.reads == ["one"]


def test_on_kill_uses_the_shared_client_without_closing_it_for_others(connections: Connections) -> None:
    async def main() -> None:
        held = await clients.acquire("one")
        await connections.trigger("killed", []).on_kill()  # ABS cannot cancel: it only logs
        assert not held.client.closed  # type: ignore[attr-defined]
        await clients.release(held)

    asyncio.run(main())
    assert len(connections.built) == 1 and connections.built[0].closed == 1


def test_when_the_trigger_reading_the_connection_is_cancelled_a_waiting_one_reads_it(connections: Connections) -> None:
    async def main() -> None:
        connections.read_gate = asyncio.Event()
        reader = asyncio.create_task(events(connections.trigger("reader", [COMPLETE])))
        await asyncio.sleep(0.01)
        waiter = asyncio.create_task(events(connections.trigger("waiter", [IN_PROGRESS, COMPLETE])))
        await asyncio.sleep(0.01)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        connections.read_gate.set()
        (event,) = await waiter
        assert event["status"] == "complete"

    asyncio.run(main())
    assert connections.reads == ["one", "one"]
    (client,) = connections.built
    assert client.polls == ["waiter", "waiter"] and client.closed == 1


def test_triggers_share_their_class_logger() -> None:
    first, second = (OperationStatusTrigger(batchcode_conn_id="one", operation_id=op, topic="t") for op in "ab")
    assert first.log is second.log
    assert first.log is OperationStatusTrigger.logger()
