"""The one event :class:`OperationStatusTrigger` yields and :class:`OperationStatusSensor` resumes from.

On the wire (the triggerer stores it in the metadata database) it is a plain dict of JSON
values, as Airflow requires; both sides build and read it through :class:`OperationEvent`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from airflow_batchcode.exceptions import UnexpectedResponseError


class EventStatus(StrEnum):
    """How the wait ended: the operation's terminal state, or ``error`` when the trigger could not tell."""

    COMPLETE = "complete"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    ERROR = "error"


class EndReason(StrEnum):
    """Who ended a ``timed_out`` wait: the service (the operation timed out) or the sensor's deadline."""

    SERVICE = "service"
    DEADLINE = "deadline"


@dataclass(frozen=True)
class OperationEvent:
    """The end of a wait on one operation.

    :param status: how it ended.
    :param operation_id: the operation waited on.
    :param message: the service's error, or a human account of the ending (no secrets).
    :param topic: the operation's topic.
    :param reason: who ended it (see :class:`EndReason`); ``None`` for ``error``.
    :param polls: status calls made.
    """

    status: EventStatus
    operation_id: str
    message: str | None = None
    topic: str | None = None
    reason: EndReason | None = None
    polls: int | None = None

    def __post_init__(self) -> None:
        if not self.operation_id:
            raise UnexpectedResponseError("a trigger event names no operation")

    def to_payload(self) -> dict[str, Any]:
        """The event's dict, as the trigger yields it."""
        payload: dict[str, Any] = {
            "status": self.status.value,
            "operation_id": self.operation_id,
            "message": self.message,
            "topic": self.topic,
        }
        if self.reason is not None:
            payload["reason"] = self.reason.value
        if self.polls is not None:
            payload["polls"] = self.polls
        return payload

    @classmethod
    def from_payload(cls, payload: Any) -> OperationEvent:
        """Read an event the trigger yielded.

        :raises UnexpectedResponseError: when ``payload`` is not such an event.
        """
        try:
            if not isinstance(payload, dict) or not payload.get("operation_id"):
                raise ValueError("no operation_id")
            reason = payload.get("reason")
            polls = payload.get("polls")
            return cls(
                status=EventStatus(str(payload.get("status"))),
                operation_id=str(payload["operation_id"]),
                message=None if payload.get("message") is None else str(payload["message"]),
                topic=payload.get("topic"),
                reason=None if reason is None else EndReason(reason),
                polls=None if polls is None else int(polls),
            )
        except (ValueError, TypeError):
            raise UnexpectedResponseError(f"Malformed trigger event: {payload!r}") from None
