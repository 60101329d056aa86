"""The policy of one remote operation's life, independent of Airflow's task context.

:class:`~airflow_batchcode.hooks.batchcode.BatchCodeHook` applies it (``create_or_reattach``,
``upload_once``, ``require_complete``, ``download_to``); the operators only pass their
arguments and the task state store. What must survive a retry is kept in that store, which
here is any object with ``get`` and ``set`` (:class:`StateStore`).
"""

from __future__ import annotations

import calendar
import time
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from airflow_batchcode.exceptions import (
    BatchCodeError,
    OperationFailedError,
    OperationTimedOutError,
    StatusCheckFailedError,
    WaitTimedOutError,
)
from airflow_batchcode.operation_ref import OperationRef
from airflow_batchcode.services.base import BatchCodeClient, OperationState
from airflow_batchcode.triggers.event import EventStatus

CREATED_KEY = "batchcode_operation"
"""State store key: the operation the create task made (its reference, upload URL expiry, input digest)."""
UPLOADED_KEY = "batchcode_uploaded"
"""State store key: the upload task's operation and bytes sent."""
UPLOAD_URL_MARGIN = 300.0
"""A stored upload URL is reused only if it stays valid at least this many more seconds."""


class StateStore(Protocol):
    """What survives a task's retry: Airflow's task state store, or any stand-in with these two methods."""

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``."""
        ...

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON-able) under ``key``."""
        ...


def upload_url_expiry(url: str) -> float | None:
    """Epoch seconds at which a presigned URL expires (SigV4 or legacy form), if it says."""
    query = {key.lower(): values[0] for key, values in parse_qs(urlsplit(url).query).items()}
    if "expires" in query and query["expires"].isdigit():
        return float(query["expires"])
    date, expires = query.get("x-amz-date"), query.get("x-amz-expires")
    if date and expires and expires.isdigit():
        try:
            signed = calendar.timegm(time.strptime(date, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            return None
        return signed + float(expires)
    return None


def raise_for_outcome(status: str, operation_id: str, message: str | None, *, reason: str = "service") -> None:
    """Turn a terminal outcome other than ``complete`` into the typed error a user can act on."""
    if status == OperationState.FAILED:
        raise OperationFailedError(operation_id, message)
    if status == OperationState.TIMED_OUT and reason == "deadline":
        raise WaitTimedOutError(operation_id, None, detail=message or "")
    if status == OperationState.TIMED_OUT:
        raise OperationTimedOutError(operation_id, message)
    if status == EventStatus.ERROR:
        raise StatusCheckFailedError(operation_id, None, detail=message or "")
    if status != OperationState.COMPLETE:
        raise BatchCodeError(f"Waiting on operation {operation_id} failed: {message}")


def reusable(
    stored: Any,
    client: BatchCodeClient,
    log: Any,
    *,
    topic: str,
    model: str | None,
    input_digest: str | None,
) -> OperationRef | None:
    """The operation an earlier try created (``stored`` under :data:`CREATED_KEY`), if it can still be used.

    It can when it was made for the same topic, model and input, and is awaiting input with an
    upload URL valid for :data:`UPLOAD_URL_MARGIN` more seconds, in progress, or complete with
    its results still downloadable.
    """
    if not isinstance(stored, dict) or not stored.get("operation_id"):
        return None
    ref = OperationRef.parse(stored)
    if ref.topic != topic or ref.model != model:
        log.info("Earlier operation %s was for another topic/model; creating a new one", ref.operation_id)
        return None
    if (stored.get("input_digest") or None) != (input_digest or None):
        log.info("Earlier operation %s was for a different manifest; creating a new one", ref.operation_id)
        return None
    try:
        operation = client.get_operation(ref.operation_id, topic, model)
    except BatchCodeError as exc:
        log.warning("Cannot check earlier operation %s (%s); creating a new one", ref.operation_id, exc)
        return None
    expires = stored.get("upload_expires")
    if operation.state is OperationState.AWAITING_INPUT:
        if expires is None or expires - time.time() > UPLOAD_URL_MARGIN:
            log.info("Re-attaching to operation %s, still awaiting input", ref.operation_id)
            return ref
        log.info("Operation %s awaits input but its upload URL is expiring; creating a new one", ref.operation_id)
        return None
    if operation.state is OperationState.COMPLETE and not client.results_available(operation):
        log.warning(
            "Earlier operation %s is complete but its output is gone (the service deletes outputs within "
            "24 hours); creating a new one to code this chunk again",
            ref.operation_id,
        )
        return None
    if operation.state in (OperationState.IN_PROGRESS, OperationState.COMPLETE):
        log.info("Re-attaching to operation %s, already %s", ref.operation_id, operation.state.value)
        return ref
    log.warning("Earlier operation %s is %s; creating a new one", ref.operation_id, operation.state.value)
    return None
