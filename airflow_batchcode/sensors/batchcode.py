"""OperationStatusSensor: waits for a remote operation to finish, deferred to the triggerer by default."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf

from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.hooks.batchcode import BatchCodeHook
from airflow_batchcode.hooks.lifecycle import raise_for_outcome
from airflow_batchcode.operation_ref import OperationRef
from airflow_batchcode.services.base import Operation
from airflow_batchcode.services.catalogue import spec_for
from airflow_batchcode.triggers.batchcode import MIN_POLL_INTERVAL, OperationStatusTrigger
from airflow_batchcode.triggers.event import EndReason, OperationEvent

__all__ = ["DEADLINE_KEY", "OperationStatusSensor", "default_deferrable", "raise_for_outcome"]

DEADLINE_KEY = "batchcode_deadline"
DEFAULT_TIMEOUT = timedelta(days=2)


def default_deferrable() -> bool:
    """``[batchcode] default_deferrable`` (True unless set), so the triggerer does the waiting."""
    return conf.getboolean("batchcode", "default_deferrable", fallback=True)


class OperationStatusSensor(BaseSensorOperator):
    """Waits until a batch coding operation is ``complete``; fails clearly when it ``failed`` or ``timed_out``.

    Deferrable by default: the wait runs in the triggerer and holds no worker slot. A retry
    keeps the first try's deadline (kept in the task state store), so retries never extend
    the wait.

    :param operation: the create task's output, or an operation id (then pass ``topic``).
    :param topic: the operation's topic, when ``operation`` does not carry it.
    :param model: the operation's model, if one was named.
    :param batchcode_conn_id: the ``batchcode`` connection.
    :param poll_interval: seconds between status calls (at least 0.5); default the service's own
        advice: 600 for ABS ("up to once every ten minutes"), 60 for the others.
    :param timeout: how long to wait in all before giving up (seconds or timedelta; default 2 days).
    :param deferrable: wait in the triggerer (default from ``[batchcode] default_deferrable``, else True).
    """

    template_fields: Sequence[str] = ("operation", "topic", "model", "batchcode_conn_id")
    ui_color = "#e6f0ff"

    def __init__(
        self,
        *,
        operation: Any,
        topic: str | None = None,
        model: str | None = None,
        batchcode_conn_id: str = BatchCodeHook.default_conn_name,
        poll_interval: float | None = None,
        timeout: timedelta | float = DEFAULT_TIMEOUT,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if poll_interval is not None and float(poll_interval) < MIN_POLL_INTERVAL:
            raise ConfigurationError(f"poll_interval must be at least {MIN_POLL_INTERVAL} s, got {poll_interval}")
        # only a non-deferred sensor pokes; execute() polls at _interval(), the service's advice by default
        kwargs.setdefault("poke_interval", 60.0 if poll_interval is None else poll_interval)
        super().__init__(timeout=timeout, **kwargs)
        self.operation = operation
        self.topic = topic
        self.model = model
        self.batchcode_conn_id = batchcode_conn_id
        self.poll_interval = None if poll_interval is None else float(poll_interval)
        self.deferrable = default_deferrable() if deferrable is None else deferrable

    @cached_property
    def hook(self) -> BatchCodeHook:
        return BatchCodeHook(self.batchcode_conn_id)

    @property
    def ref(self) -> OperationRef:
        return OperationRef.parse(self.operation, topic=self.topic or self.hook.default_topic, model=self.model)

    def _deadline(self, context: Any) -> float:
        """The wall-clock deadline, fixed on the first try and kept across retries."""
        store = context.get("task_state_store")
        stored = store.get(DEADLINE_KEY) if store is not None else None
        if isinstance(stored, int | float):
            return float(stored)
        timeout = self.timeout.total_seconds() if isinstance(self.timeout, timedelta) else float(self.timeout)
        deadline = time.time() + timeout
        if store is not None:
            store.set(DEADLINE_KEY, deadline)
        return deadline

    def _interval(self) -> float:
        """The poll interval: as given, else the service's default."""
        if self.poll_interval is not None:
            return self.poll_interval
        return spec_for(self.hook.service).poll_interval

    def execute(self, context: Any) -> Any:
        ref = self.ref
        interval = self._interval()
        deadline = self._deadline(context)
        operation = self._status(ref)
        self.log.info(
            "Waiting on %s operation %s (topic %s): %s; deadline %s UTC",
            self.hook.service,
            ref.operation_id,
            ref.require_topic(),
            operation.state.value,
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(deadline)),
        )
        if operation.state.is_terminal():
            return self._finish(operation.state.value, ref.operation_id, operation.error)
        if not self.deferrable:
            self.poke_interval = interval
            return super().execute(context)
        remaining = deadline - time.time()
        if remaining <= 0:
            return self._finish("timed_out", ref.operation_id, None, reason="deadline")
        self.defer(
            trigger=OperationStatusTrigger(
                batchcode_conn_id=self.batchcode_conn_id,
                operation_id=ref.operation_id,
                topic=ref.require_topic(),
                model=ref.model,
                poll_interval=interval,
                deadline=deadline,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=remaining + 2 * interval + 60),
        )

    def poke(self, context: Any) -> PokeReturnValue:
        ref = self.ref
        if time.time() >= self._deadline(context):
            self._finish("timed_out", ref.operation_id, None, reason="deadline")
        operation = self._status(ref)
        self.log.info("%s", operation.describe())
        if operation.state.is_terminal():
            return PokeReturnValue(True, self._finish(operation.state.value, ref.operation_id, operation.error))
        return PokeReturnValue(False)

    def execute_complete(self, context: Any, event: Any = None) -> str:
        """Resume after the trigger's event; return the operation id when complete."""
        ended = OperationEvent.from_payload(event)
        self.log.info("Operation %s ended: %s (%s)", ended.operation_id, ended.status.value, ended.message)
        return self._finish(ended.status, ended.operation_id, ended.message, reason=ended.reason or EndReason.SERVICE)

    def on_kill(self) -> None:
        """The task was killed while poking: cancel the operation's unfinished work where the service can
        (super.ai: every live job of the batch), and say so in the log. (A deferred wait is cancelled by
        :meth:`OperationStatusTrigger.on_kill`.)"""
        service, operation_id = self.hook.service, self.ref.operation_id
        if not spec_for(service).cancel:
            self.log.info("Task killed: %s cannot cancel operation %s", service, operation_id)
            return
        self.log.warning("Task killed: cancelling the unfinished jobs of %s operation %s", service, operation_id)
        count = self.hook.client.cancel_batch(operation_id)  # type: ignore[attr-defined]  # spec.cancel
        self.log.warning("Task killed: cancelled %d unfinished job(s) of %s operation %s", count, service, operation_id)

    def _status(self, ref: OperationRef) -> Operation:
        return self.hook.client.get_operation(ref.operation_id, ref.require_topic(), ref.model)

    @staticmethod
    def _finish(status: str, operation_id: str, message: str | None, *, reason: str = "service") -> str:
        raise_for_outcome(status, operation_id, message, reason=reason)
        return operation_id
