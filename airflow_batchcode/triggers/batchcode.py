"""OperationStatusTrigger: polls a remote operation from the triggerer until it ends."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_batchcode.exceptions import BatchCodeError
from airflow_batchcode.services.base import AsyncBatchCodeClient, OperationState
from airflow_batchcode.services.budget.planner import PollPacer
from airflow_batchcode.services.catalogue import spec_for
from airflow_batchcode.triggers import clients
from airflow_batchcode.triggers.event import EndReason, EventStatus, OperationEvent

MIN_POLL_INTERVAL = 0.5
_RANK = {
    OperationState.AWAITING_INPUT: 0,
    OperationState.IN_PROGRESS: 1,
    OperationState.COMPLETE: 2,
    OperationState.FAILED: 2,
    OperationState.TIMED_OUT: 2,
}
"""How far along each state is; a later poll may never report an earlier state."""
PROGRESS_LOG_EVERY = 10
"""Log an unchanged state only every this many polls (state changes are always logged)."""
START_SPREAD_SECONDS = 1.0
"""Each run starts after a random wait of up to this (or its poll interval, if shorter), so a
triggerer (re)starting many triggers at once spreads their connection look-ups and polls
instead of running them all in one turn of its event loop."""


class OperationStatusTrigger(BaseTrigger):
    """Polls a batch coding operation's status without holding a worker slot.

    Serialises only plain values, so it survives a triggerer restart; the deadline is wall
    clock (epoch seconds), so a restart does not reset it. Yields exactly one event, an
    :class:`~airflow_batchcode.triggers.event.OperationEvent` as a dict. Triggers of one
    connection on one event loop share its client (:mod:`airflow_batchcode.triggers.clients`)
    and the class's logger, so a waiting trigger keeps few objects of its own.

    :param batchcode_conn_id: the ``batchcode`` connection.
    :param operation_id: the remote operation.
    :param topic: the operation's topic.
    :param model: the operation's model, if one was named.
    :param poll_interval: the shortest gap between polls (at least 0.5); the connection's request
        budget stretches it as the operation ages and as the quota window runs low
        (:mod:`airflow_batchcode.services.budget.planner`).
    :param deadline: epoch seconds after which the wait ends as ``timed_out``; ``None`` waits forever.
    :param max_consecutive_errors: transient failures in a row tolerated before giving up (which
        errors are transient is decided on their classes: ``BatchCodeError.transient``; any other
        error ends the wait at once).
    """

    def __init__(
        self,
        *,
        batchcode_conn_id: str,
        operation_id: str,
        topic: str,
        model: str | None = None,
        poll_interval: float = 60.0,
        deadline: float | None = None,
        max_consecutive_errors: int = 10,
    ) -> None:
        super().__init__()
        self.batchcode_conn_id = batchcode_conn_id
        self.operation_id = operation_id
        self.topic = topic
        self.model = model
        self.poll_interval = max(MIN_POLL_INTERVAL, float(poll_interval))
        self.deadline = deadline
        self.max_consecutive_errors = max_consecutive_errors

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "batchcode_conn_id": self.batchcode_conn_id,
                "operation_id": self.operation_id,
                "topic": self.topic,
                "model": self.model,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "max_consecutive_errors": self.max_consecutive_errors,
            },
        )

    @property
    def log(self) -> Any:
        """The class's logger, which every trigger of it shares (``LoggingMixin`` would make one per
        trigger: some eight objects each, kept for as long as it waits). It carries no state of its
        own trigger; the triggerer sends each line to its trigger's log by the running task's context."""
        return type(self).logger()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        await asyncio.sleep(random.uniform(0.0, min(self.poll_interval, START_SPREAD_SECONDS)))
        try:
            shared = await clients.acquire(self.batchcode_conn_id)
        except Exception as exc:  # a missing connection is Airflow's error, not ours: still one clear event
            reason = str(exc) if isinstance(exc, BatchCodeError) else f"{type(exc).__name__}: {exc}"
            yield self._event("error", f"Cannot build a client for connection {self.batchcode_conn_id!r}: {reason}")
            return
        client = shared.client
        advice = getattr(client, "poll_advice", None)
        pacer = PollPacer(getattr(client, "budget", None), self.operation_id, advice=advice, log=self.log)
        try:
            yield await self._poll_until_done(client, pacer)
        finally:
            try:
                await pacer.close()
            finally:
                await clients.release(shared)

    async def _poll_until_done(self, client: AsyncBatchCodeClient, pacer: PollPacer) -> TriggerEvent:
        polls = failures = 0
        last_state: OperationState | None = None
        self.log.info(
            "Waiting on %s operation %s (topic %s): polling every %.1f s%s",
            client.service,
            self.operation_id,
            self.topic,
            self.poll_interval,
            f", deadline {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(self.deadline))}" if self.deadline else "",
        )
        while True:
            if self.deadline is not None and time.time() >= self.deadline:
                state = last_state.value if last_state else "unknown"
                return self._event(
                    "timed_out",
                    f"Gave up waiting: the deadline passed while the operation was {state}",
                    reason="deadline",
                    polls=polls,
                )
            polls += 1
            try:
                async with asyncio.timeout(self._time_left()):  # a call waiting out a spent quota ends at the deadline
                    operation = await client.get_operation(self.operation_id, self.topic, self.model)
            except TimeoutError:
                continue
            except BatchCodeError as exc:
                failures += 1
                if not exc.transient or failures >= self.max_consecutive_errors:
                    return self._event("error", f"Status check failed ({failures} in a row): {exc}", polls=polls)
                delay = min(self.poll_interval * 2 ** (failures - 1), max(self.poll_interval, 300.0))
                self.log.warning("Status check %d failed (%s); next try in %.1f s", polls, exc, delay)
                await asyncio.sleep(self._capped(delay))
                continue
            failures = 0
            if last_state is not None and _RANK[operation.state] < _RANK[last_state]:
                return self._event(
                    "error",
                    f"The service reported the operation going backwards, from {last_state.value} to "
                    f"{operation.state.value}: refusing to trust its status",
                    polls=polls,
                )
            if operation.state is not last_state or polls % PROGRESS_LOG_EVERY == 0:
                self.log.info("Poll %d: %s", polls, operation.describe())
            last_state = operation.state
            if operation.state.is_terminal():
                return self._event(
                    operation.state.value,
                    operation.error or operation.describe(),
                    reason="service",
                    polls=polls,
                )
            del operation  # not kept through the wait: one object fewer per waiting trigger for the collector
            await asyncio.sleep(self._capped(await pacer.next_delay(self.poll_interval)))

    def _time_left(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.time())

    async def on_kill(self) -> None:
        """A user killed the deferred task: cancel the operation's unfinished work where the service can
        (super.ai: every live job of the batch), and say so in the log."""
        shared = await clients.acquire(self.batchcode_conn_id)
        client = shared.client
        try:
            if not spec_for(client.service).cancel:
                self.log.info("Task killed: %s cannot cancel operation %s", client.service, self.operation_id)
                return
            self.log.warning(
                "Task killed: cancelling the unfinished jobs of %s operation %s", client.service, self.operation_id
            )
            count = await client.cancel_batch(self.operation_id)  # type: ignore[attr-defined]  # spec.cancel
            self.log.warning(
                "Task killed: cancelled %d unfinished job(s) of %s operation %s",
                count,
                client.service,
                self.operation_id,
            )
        finally:
            await clients.release(shared)

    def _capped(self, seconds: float) -> float:
        """``seconds``, or the time left before the deadline when that is shorter."""
        left = self._time_left()
        return seconds if left is None else min(seconds, left)

    def _event(self, status: str, message: str, *, reason: str | None = None, polls: int | None = None) -> TriggerEvent:
        ended = OperationEvent(
            EventStatus(status),
            self.operation_id,
            message,
            self.topic,
            reason=None if reason is None else EndReason(reason),
            polls=polls,
        )
        return TriggerEvent(ended.to_payload())
