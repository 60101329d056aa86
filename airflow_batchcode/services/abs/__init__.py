"""The ABS Occupation Coding Service: OAuth2 tokens, topics and models, async batch coding, real-time coding.

Wire contract: the ABS user guide, "Asynchronous batch coding". API calls carry the raw
token as the ``Authorization`` value (no ``Bearer`` prefix); uploads and downloads go to
presigned S3 URLs. Both clients here share one token cache and one request budget per
connection in the process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_batchcode.services.lazy import exported_from

if TYPE_CHECKING:
    from airflow_batchcode.services.abs.client import (
        KMS_HEADER,
        MAX_REALTIME_RECORDS,
        MAX_RECORD_CHARS,
        MAX_UPLOAD_BYTES,
        SSE_HEADER,
        AbsClient,
        AsyncAbsClient,
    )
    from airflow_batchcode.services.abs.settings import SERVICE, AbsSettings, default_auth_url
    from airflow_batchcode.services.abs.wire import (
        ModelDescription,
        Topic,
        parse_create,
        parse_models,
        parse_status,
        parse_token,
        parse_topics,
        read_abs_error,
        status_path,
        topic_path,
    )
    from airflow_batchcode.services.parsing import json_kind, segment

__all__ = [
    "KMS_HEADER",
    "MAX_REALTIME_RECORDS",
    "MAX_RECORD_CHARS",
    "MAX_UPLOAD_BYTES",
    "SERVICE",
    "SSE_HEADER",
    "AbsClient",
    "AbsSettings",
    "AsyncAbsClient",
    "ModelDescription",
    "Topic",
    "default_auth_url",
    "json_kind",
    "parse_create",
    "parse_models",
    "parse_status",
    "parse_token",
    "parse_topics",
    "read_abs_error",
    "segment",
    "status_path",
    "topic_path",
]

__getattr__ = exported_from(__name__, __all__, ("client", "settings", "wire", "airflow_batchcode.services.parsing"))
