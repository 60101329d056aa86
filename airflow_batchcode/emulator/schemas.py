"""The OpenAPI side of the emulator: response models and hand-written request documentation.

Handlers build their responses themselves (msgspec); these only describe them in ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from airflow_batchcode.emulator.contract import MAX_REALTIME_RECORDS


class MessageBody(BaseModel):
    """Every API error."""

    message: str


class OAuthErrorBody(BaseModel):
    """Token endpoint errors."""

    error: str
    error_description: str | None = None


class TokenBody(BaseModel):
    """A client-credentials token."""

    access_token: str
    expires_in: int
    token_type: str


class TopicBody(BaseModel):
    """One coding topic."""

    uriName: str
    fullName: str


class ModelBody(BaseModel):
    """One coding model (``ModelInfo.to_json()``)."""

    modelId: str
    modelVersion: Any = None
    modelReleaseDate: Any = None
    modelType: Any = None
    inputFormat: Any = None
    topicStandard: Any = None
    topicVersion: Any = None


class CreatedBody(BaseModel):
    """A new batch operation."""

    requestUploadUrl: str
    operationId: str
    bucketKmsKeyArn: str


class StatusBody(BaseModel):
    """An operation's status."""

    operationStatus: Literal["awaiting_input", "in_progress", "complete", "failed", "timed_out"]
    responseDownloadUrl: str | None = None
    metadataDownloadUrl: str | None = None
    error: str | None = None


class CodeBody(BaseModel):
    """One code."""

    codeCategory: str
    codeLabel: str
    codeConfidence: float


class CodeResponseBody(BaseModel):
    """The coding of one record."""

    recordId: str | None
    codeStatus: Literal["successful", "unsuccessful"]
    result: CodeBody | None = None
    suggestions: list[CodeBody] | None = None


class RecordBody(BaseModel):
    """One input record."""

    recordId: str | None = None
    occp_text: str
    tasks_text: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": MessageBody} for status in (400, 401, 403, 404, 409, 429, 500)
}
_RECORD_SCHEMA = RecordBody.model_json_schema()
CODE_REQUEST = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        _RECORD_SCHEMA,
                        {"type": "array", "items": _RECORD_SCHEMA, "minItems": 1, "maxItems": MAX_REALTIME_RECORDS},
                    ]
                }
            }
        },
    }
}
TOKEN_REQUEST = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {"grant_type": {"type": "string", "enum": ["client_credentials"]}},
                    "required": ["grant_type"],
                }
            }
        },
    }
}


def manual_parameters(*path: str) -> dict[str, Any]:
    """OpenAPI parameters of a route that reads its path and ``Authorization`` itself."""
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in path
    ]
    params.append(
        {
            "name": "authorization",
            "in": "header",
            "required": False,
            "description": "The raw access token (no Bearer prefix)",
            "schema": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        }
    )
    return {"parameters": params}
