"""The create call's request: the canonical manifest as super.ai ``inputs``, streamed, and its answer."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import IO, Any

from airflow_batchcode.exceptions import ConfigurationError, UnexpectedResponseError
from airflow_batchcode.services.base import ManifestSource
from airflow_batchcode.services.parsing import json_object, opened, require_object
from airflow_batchcode.services.superai.settings import identifier

MAX_INLINE_BYTES = 4_000_000
"""Largest create request body sent with inline ``inputs``."""


def _input_of(raw: bytes, line: int, topic: str) -> dict[str, Any]:
    """One canonical manifest line → the data program's input, carrying its line number."""
    record = json_object(raw)
    if record is None or not all(isinstance(record.get(k), str) for k in ("occp_text", "tasks_text")):
        raise ConfigurationError(
            f"Manifest line {line} is not a record with string occp_text and tasks_text: "
            "pass the pipeline's validated manifest"
        )
    record_id = record.get("recordId")
    return {
        "line": line,
        "record_id": None if record_id is None else str(record_id),
        "job_title": record["occp_text"],
        "duties": record["tasks_text"],
        "topic": topic,
    }


def encode(value: Any) -> bytes:
    """Compact JSON."""
    return json.dumps(value, separators=(",", ":")).encode()


def write_create_body(
    manifest: ManifestSource,
    sink: IO[bytes],
    *,
    topic: str,
    metadata: Mapping[str, Any],
    tags: Sequence[str],
    callback_url: str | None = None,
    limit: int = MAX_INLINE_BYTES,
) -> int:
    """Stream the create request body ``{"inputs": [...], "metadata", "tags", "callbackUrl"?}`` into ``sink``.

    Manifest lines are numbered from 0, blank lines skipped. :return: the number of inputs.
    :raises ConfigurationError: a line is not a record, the manifest is empty, or the body would pass ``limit``
        (the message says how many records fit).
    """
    tail: dict[str, Any] = {"metadata": dict(metadata), "tags": list(tags)}
    if callback_url:
        tail["callbackUrl"] = callback_url
    closing = b"]," + encode(tail)[1:]
    sink.write(b'{"inputs":[')
    size = len(b'{"inputs":[') + len(closing)
    count = 0
    with opened(manifest) as source:
        for raw in source:
            if not raw.strip():
                continue
            encoded = encode(_input_of(raw, count, topic))
            size += len(encoded) + (1 if count else 0)
            if size > limit:
                raise ConfigurationError(
                    f"This manifest chunk is too large for one super.ai request: its inputs pass {limit:,} bytes "
                    f"at record {count + 1}, and super.ai takes at most 4 MB of inline inputs. Only the first "
                    f"{count} records fit: set chunk_records to {count} or fewer and run again"
                )
            sink.write(b"," + encoded if count else encoded)
            count += 1
    if not count:
        raise ConfigurationError("The manifest holds no records: there is nothing to send to super.ai")
    sink.write(closing)
    return count


def parse_create(body: Any) -> str:
    """The batch id of a create response."""
    values = require_object(body, "super.ai create jobs")
    batch_id = values.get("batch_id", values.get("batchId"))
    if batch_id in (None, ""):
        raise UnexpectedResponseError("super.ai create jobs: the response has no batch_id")
    return identifier(batch_id, "batch_id in the create response", UnexpectedResponseError)
