"""ABS's answers, read: tokens, created operations, statuses, topics and models; and its API paths."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_batchcode.exceptions import UnexpectedResponseError
from airflow_batchcode.services.base import Operation, OperationState, UploadTarget
from airflow_batchcode.services.http.errors import json_message_reader
from airflow_batchcode.services.parsing import (
    is_plain_id,
    json_kind,
    require_list_of_objects,
    require_object,
    require_strings,
    segment,
)
from airflow_batchcode.services.tokens import Token

read_abs_error = json_message_reader("message", "error_description", "error")


@dataclass(frozen=True)
class Topic:
    """A classification the service codes against."""

    uri_name: str
    full_name: str


@dataclass(frozen=True)
class ModelDescription:
    """One coding model of a topic, as ``GET /v1/topics/{topic}/models`` describes it."""

    model_id: str
    model_version: str = ""
    release_date: str = ""
    model_type: str = ""
    input_format: tuple[str, ...] = ()
    topic_standard: str = ""
    topic_version: str = ""


def topic_path(topic: str, model: str | None) -> str:
    """``/v1/topics/{topic}`` or ``/v1/topics/{topic}/models/{model}``."""
    path = f"/v1/topics/{segment(topic, 'topic')}"
    if model:
        path += f"/models/{segment(model, 'model')}"
    return path


def status_path(topic: str, model: str | None, operation_id: str) -> str:
    """The status path of an operation."""
    return f"{topic_path(topic, model)}/batch-code/operations/{segment(operation_id, 'operation id')}"


def parse_token(body: Any) -> Token:
    """Read an OAuth2 token response."""
    what = "ABS token endpoint"
    body = require_object(body, what)
    require_strings(body, what, "access_token")
    expires_in = body.get("expires_in", 3600)
    if (
        not isinstance(expires_in, int | float)
        or isinstance(expires_in, bool)
        or not math.isfinite(expires_in)
        or expires_in <= 0
    ):
        raise UnexpectedResponseError(f"{what}: expires_in is {json_kind(expires_in)}, not a positive number")
    return Token.from_lifetime(body["access_token"], float(expires_in))


def parse_create(body: Any) -> UploadTarget:
    """Read a batch-code create response."""
    what = "ABS create operation"
    values = require_object(body, what)
    require_strings(values, what, "operationId", "requestUploadUrl", "bucketKmsKeyArn")
    if not is_plain_id(values["operationId"]):
        raise UnexpectedResponseError(
            f"{what}: operationId {values['operationId'][:80]!r} is not a plain identifier "
            "(letters, digits, '.', '_' or '-')"
        )
    return UploadTarget(
        operation_id=str(values["operationId"]),
        upload_url=str(values["requestUploadUrl"]),
        kms_key_arn=str(values["bucketKmsKeyArn"]),
    )


def parse_status(body: Any, operation_id: str) -> Operation:
    """Read an operation status response."""
    what = f"ABS operation {operation_id}"
    body = require_object(body, f"{what}: status")
    if "operationStatus" not in body:
        raise UnexpectedResponseError(f"{what}: status response has no operationStatus")
    raw = body["operationStatus"]
    if not isinstance(raw, str):
        raise UnexpectedResponseError(f"{what}: operationStatus is {json_kind(raw)}, not a string")
    try:
        state = OperationState(raw)
    except ValueError:
        raise UnexpectedResponseError(f"{what}: unknown status {raw[:80]!r}") from None
    error = body.get("error")
    response_url, metadata_url = body.get("responseDownloadUrl"), body.get("metadataDownloadUrl")
    for name, value in (
        ("error", error),
        ("responseDownloadUrl", response_url),
        ("metadataDownloadUrl", metadata_url),
    ):
        if value is not None and not isinstance(value, str):
            raise UnexpectedResponseError(f"{what}: {name} is {json_kind(value)}, not a string")
    if state is OperationState.COMPLETE and not response_url:
        raise UnexpectedResponseError(f"{what}: complete but no responseDownloadUrl")
    return Operation(
        operation_id=operation_id,
        state=state,
        error=error,
        response_url=response_url,
        metadata_url=metadata_url,
        raw_status=raw,
    )


def parse_topics(body: Any) -> list[Topic]:
    """``GET /v1/topics``: the topics the account may code against."""
    items = require_list_of_objects(body, "ABS list topics")
    return [Topic(uri_name=str(item.get("uriName", "")), full_name=str(item.get("fullName", ""))) for item in items]


def parse_models(body: Any, topic: str) -> list[ModelDescription]:
    """``GET /v1/topics/{topic}/models``: the topic's models, as the service lists them."""
    return [
        ModelDescription(
            model_id=str(item.get("modelId", "")),
            model_version=str(item.get("modelVersion", "")),
            release_date=str(item.get("modelReleaseDate", "")),
            model_type=str(item.get("modelType", "")),
            input_format=string_tuple(item.get("inputFormat")),
            topic_standard=str(item.get("topicStandard", "")),
            topic_version=str(item.get("topicVersion", "")),
        )
        for item in require_list_of_objects(body, f"ABS list models of {topic}")
    ]


def string_tuple(value: Any) -> tuple[str, ...]:
    """A list of values as strings, or a lone non-empty string as a one-item tuple."""
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return (value,) if isinstance(value, str) and value else ()


def metadata_model_id(raw: bytes) -> str | None:
    """The model id an ABS metadata file names, or ``None`` when its shape is unknown.

    The seed only says the file "describes the model used". Read leniently: ``{"model": {"modelId"}}``
    (the emulator's shape), ``{"model": "<id>"}`` or a top-level ``modelId``; anything else (not
    JSON, another shape) is kept raw on disk and never fails the load: the caller then takes the
    model from the operation or the requested model.
    """
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return None
    return model_id_of(body) if isinstance(body, dict) else None


def model_id_of(body: Mapping[str, Any]) -> str | None:
    """The model id of a parsed ABS metadata object (any of the shapes :func:`metadata_model_id` reads)."""
    model = body.get("model")
    for candidate in (model.get("modelId") if isinstance(model, Mapping) else model, body.get("modelId")):
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return None
