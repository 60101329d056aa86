"""What the ABS service's documentation fixes: topics, buckets, limits, messages and error shapes.

Three error families, as on the real service: API Gateway JSON (``{"message": ...}``), the
OAuth2 token endpoint's ``{"error": ...}``, and S3 XML for presigned storage.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.responses import Response

TOPICS = (
    ("anzsco", "Australian and New Zealand Standard Classification of Occupations, 2022"),
    ("osca", "Occupation Standard Classification for Australia, 2024"),
)
INPUT_BUCKET = "abs-coder-input"
OUTPUT_BUCKET = "abs-coder-output"
SSE_HEADER = "x-amz-server-side-encryption"
KMS_HEADER = "x-amz-server-side-encryption-aws-kms-key-id"
MAX_TEXT = 300
MAX_REALTIME_RECORDS = 300
MAX_REALTIME_BODY = 1 << 20
MAX_LINE = 1 << 20
CHUNK = 1 << 20

MSG_BAD_BODY = "Invalid request body"
MSG_NO_TOPIC = "The specified topic does not exist"
MSG_NO_MODEL = "The specified model does not exist"
MSG_WRONG_TOPIC = "Selected model does not match the input topic."
MSG_NO_OPERATION = "The specified operation does not exist"
MSG_INTERNAL = "Error performing request"
MSG_DENY = "User is not authorized to access this resource with an explicit deny"
MSG_INVALID_JSON = "Invalid JSON data format. "

_encode = msgspec.json.encode


class ApiError(Exception):
    """An API error: a status and a message (ABS answers it as API Gateway does, ``{"message": ...}``;
    every other emulator in its own error shape)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class OAuthError(Exception):
    """A token endpoint error: ``{"error": ..., "error_description"?: ...}``."""

    def __init__(self, status: int, error: str, description: str | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.body = {"error": error} if description is None else {"error": error, "error_description": description}


class StorageError(Exception):
    """An S3 style XML error."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response encoded with msgspec."""
    return Response(_encode(content), status_code=status, media_type="application/json", headers=headers)


def xml_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """An S3 error document."""
    body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return Response(body, status_code=status, media_type="application/xml", headers=headers)


def iso_time(ts: float) -> str:
    """``ts`` (seconds since the epoch) as ISO 8601 UTC with milliseconds and a ``Z``."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
