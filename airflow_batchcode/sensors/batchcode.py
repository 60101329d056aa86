"""OperationStatusSensor: waits for a remote operation to finish, deferred to the triggerer by default."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf

from airflow_batchcode.exceptions import (
    BatchCodeError,
    OperationFailedError,
    OperationTimedOutError,
    UnexpectedResponseError,
    WaitTimedOutError,
)
from airflow_batchcode.hooks.batchcode import BatchCodeHook
from airflow_batchcode.operation_ref import OperationRef
from airflow_batchcode.services.base import Operation, OperationState
from airflow_batchcode.triggers.batchcode import MIN_POLL_INTERVAL, OperationStatusTrigger

DEADLINE_KEY = "batchcode_deadline"
DEFAULT_TIMEOUT = timedelta(days=2)
_EVENT_STATUSES = frozenset({"complete", "failed", "timed_out", "error"})


def default_deferrable() -> bool:
    """``[batchcode] default_deferrable`` (True unless set), so the triggerer does the waiting."""
    return conf.getboolean("batchcode", "default_deferrable", fallback=True)


def raise_for_outcome(status: str, operation_id: str, message: str | None, *, reason: str = "service") -> None:
    """Turn a terminal outcome other than ``complete`` into the typed error a user can act on."""
    if status == OperationState.FAILED:
        raise OperationFailedError(operation_id, message)
    if status == OperationState.TIMED_OUT and reason == "deadline":
        raise WaitTimedOutError(operation_id, None, detail=message or "")
    if status == OperationState.TIMED_OUT:
        raise OperationTimedOutError(operation_id, message)
    if status != OperationState.COMPLETE:
        raise BatchCodeError(f"Waiting on operation {operation_id} failed: {message}")


class OperationStatusSensor(BaseSensorOperator):
    """Waits until a batch coding operation is ``complete``; fails clearly when it ``failed`` or ``timed_out``.

    Deferrable by default: the wait runs in the triggerer and holds no worker slot. A retry
    keeps the first try's deadline (kept in the task state store), so retries never extend
    the wait.

    :param operation: the create task's output, or an operation id (then pass ``topic``).
    :param topic: the operation's topic, when ``operation`` does not carry it.
    :param model: the operation's model, if one was named.
    :param batchcode_conn_id: the ``batchcode`` connection.
    :param poll_interval: seconds between status calls (at least 0.5; the ABS service suggests up to 600).
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
        poll_interval: float = 60.0,
        timeout: timedelta | float = DEFAULT_TIMEOUT,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if float(poll_interval) < MIN_POLL_INTERVAL:
            raise ValueError(f"poll_interval must be at least {MIN_POLL_INTERVAL} s, got {poll_interval}")
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(timeout=timeout, **kwargs)
        self.operation = operation
        self.topic = topic
        self.model = model
        self.batchcode_conn_id = batchcode_conn_id
        self.poll_interval = float(poll_interval)
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

    def execute(self, context: Any) -> Any:
        ref = self.ref
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
                poll_interval=self.poll_interval,
                deadline=deadline,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=remaining + 2 * self.poll_interval + 60),
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
        if not isinstance(event, dict) or event.get("status") not in _EVENT_STATUSES or not event.get("operation_id"):
            raise UnexpectedResponseError(f"Malformed trigger event for operation {self.operation!r}: {event!r}")
        self.log.info("Operation %s ended: %s (%s)", event["operation_id"], event["status"], event.get("message"))
        return self._finish(
            str(event["status"]),
            str(event["operation_id"]),
            event.get("message"),
            reason=event.get("reason", "service"),
        )

    def _status(self, ref: OperationRef) -> Operation:
        return self.hook.client.get_operation(ref.operation_id, ref.require_topic(), ref.model)

    @staticmethod
    def _finish(status: str, operation_id: str, message: str | None, *, reason: str = "service") -> str:
        raise_for_outcome(status, operation_id, message, reason=reason)
        return operation_id
