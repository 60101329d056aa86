"""The small, non-secret reference to a remote operation that travels between tasks through XCom.

``CreateOperationOperator`` returns one as a dict; the upload, sensor and download tasks
accept that dict (or a bare operation id plus a topic). The upload URL and KMS key, which
are secrets, travel only inside ``sealed_upload``: Fernet-encrypted with Airflow's key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.services.base import UploadTarget


@dataclass(frozen=True)
class OperationRef:
    """Which remote operation, on which service and topic.

    :param operation_id: the service's id of the operation.
    :param topic: the topic (classification) it codes against.
    :param model: the model id, when one was named.
    :param service: the service's name (``abs``, ...).
    :param sealed_upload: the encrypted upload URL and key, for the upload task only.
    """

    operation_id: str
    topic: str = ""
    model: str | None = None
    service: str = ""
    sealed_upload: str | None = None

    def to_xcom(self) -> dict[str, Any]:
        """A JSON-friendly dict; holds no secret in clear."""
        return {key: value for key, value in asdict(self).items() if value not in (None, "")}

    @classmethod
    def parse(cls, value: Any, *, topic: str | None = None, model: str | None = None) -> OperationRef:
        """Accept the create task's dict, a JSON string of it, or a bare operation id.

        ``topic`` and ``model`` fill in what ``value`` does not say.
        """
        if isinstance(value, OperationRef):
            return value
        if isinstance(value, str) and value.strip().startswith("{"):
            try:
                value = json.loads(value)
            except ValueError:
                raise ConfigurationError("operation is neither an operation id nor a JSON object") from None
        if isinstance(value, dict):
            if not value.get("operation_id"):
                raise ConfigurationError(f"operation reference has no operation_id: keys {sorted(value)}")
            return cls(
                operation_id=str(value["operation_id"]),
                topic=str(value.get("topic") or topic or ""),
                model=value.get("model") or model,
                service=str(value.get("service") or ""),
                sealed_upload=value.get("sealed_upload"),
            )
        if isinstance(value, str) and value.strip():
            return cls(operation_id=value.strip(), topic=topic or "", model=model)
        raise ConfigurationError(f"operation must be an operation id or the create task's output, got {value!r}")

    def require_topic(self) -> str:
        if not self.topic:
            raise ConfigurationError(
                f"No topic for operation {self.operation_id}: pass topic= or the create task's output"
            )
        return self.topic


def seal_upload(target: UploadTarget) -> str:
    """Encrypt an upload target's URL and key with Airflow's Fernet key.

    :raises ConfigurationError: when Airflow has no Fernet key (the URL would travel in clear).
    """
    fernet = _fernet()
    payload = json.dumps({"url": target.upload_url, "kms": target.kms_key_arn}).encode()
    return fernet.encrypt(payload).decode()


def unseal_upload(operation: OperationRef) -> UploadTarget:
    """Decrypt the upload target sealed by :func:`seal_upload`."""
    if not operation.sealed_upload:
        raise ConfigurationError(
            f"Operation {operation.operation_id} carries no upload target: pass the create task's output"
        )
    try:
        data = json.loads(_fernet().decrypt(operation.sealed_upload.encode()))
    except Exception:
        raise ConfigurationError(
            f"Cannot decrypt the upload target of operation {operation.operation_id}: "
            "was the Fernet key rotated between the create and upload tasks?"
        ) from None
    return UploadTarget(operation_id=operation.operation_id, upload_url=data["url"], kms_key_arn=data["kms"])


def _fernet() -> Any:
    from airflow.sdk.crypto import get_fernet

    fernet = get_fernet()
    if not getattr(fernet, "is_encrypted", False):
        raise ConfigurationError(
            "Airflow has no Fernet key ([core] fernet_key / AIRFLOW__CORE__FERNET_KEY): "
            "refusing to pass a presigned upload URL between tasks unencrypted"
        )
    return fernet
