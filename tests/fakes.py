"""Stand-ins at the client boundary for unit tests of the hook's lifecycle and the operators."""

from __future__ import annotations

import time
from typing import Any

from airflow_batchcode.hooks.batchcode import BatchCodeHook
from airflow_batchcode.services.base import Operation, OperationState, UploadTarget
from airflow_batchcode.services.registry import ServiceConfig


class Store:
    """In-memory stand-in for Airflow's task state store."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any, **_: Any) -> None:
        self.data[key] = value


class FakeClient:
    """A service that creates an empty operation and takes its manifest by a later upload (ABS)."""

    service = "abs"
    input_with_create = False
    output_name = "output.jsonl"

    def __init__(self, state: OperationState = OperationState.AWAITING_INPUT, *, outputs_kept: bool = True) -> None:
        self.state = state
        self.outputs_kept = outputs_kept
        self.created = 0
        self.uploads = 0
        self.status_calls = 0

    def results_available(self, operation: Operation) -> bool:
        return self.outputs_kept

    def create_operation(self, topic: str, model: str | None = None, **_: Any) -> UploadTarget:
        self.created += 1
        url = f"https://s3.example/in?X-Amz-Date={time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}&X-Amz-Expires=3600"
        return UploadTarget(f"op-{self.created}", url, "kms")

    def get_operation(self, operation_id: str, topic: str, model: str | None = None) -> Operation:
        self.status_calls += 1
        return Operation(operation_id, self.state, error="bad input" if self.state is OperationState.FAILED else None)

    def upload_manifest(self, target: UploadTarget, manifest: Any) -> int:
        self.uploads += 1
        return 10


class FakeInputWithCreateClient(FakeClient):
    """A service that takes its manifest with the create call (Refinery, super.ai, Gravity)."""

    service = "gravity"
    input_with_create = True

    def __init__(self, state: OperationState = OperationState.IN_PROGRESS) -> None:
        super().__init__(state)
        self.sent: list[tuple[bytes, str | None]] = []

    def create_operation(self, topic: str, model: str | None = None, **kwargs: Any) -> UploadTarget:
        manifest = kwargs.get("manifest")
        body = manifest.read_bytes() if hasattr(manifest, "read_bytes") else manifest.read()
        self.sent.append((body, kwargs.get("name")))
        self.created += 1
        return UploadTarget(f"job-{self.created}", "")


def hook_with(client: FakeClient, *, topic: str | None = "anzsco") -> BatchCodeHook:
    """A real :class:`BatchCodeHook` whose connection is read and whose client is ``client``."""
    hook = BatchCodeHook("batchcode_fake")
    extra = {"service": client.service, **({"topic": topic} if topic else {})}
    hook.__dict__["config"] = ServiceConfig(service=client.service, base_url="https://service.example", extra=extra)
    hook.__dict__["client"] = client
    return hook
