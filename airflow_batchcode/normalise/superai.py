"""super.ai output → :class:`Coded` rows.

The raw output is what :meth:`SuperAiClient.download_results` writes: one JSONL line per job,
``{"job_id", "state", "input": {"line", "record_id"}, "response": {...} | null, "error"}``, in any order.
``response`` is the occupation coder data program's output (super.ai responses are defined by each app):
``{"code", "label", "confidence"}`` when coded, ``{"code": null, "suggestions": [{"code", "label",
"confidence"}, ...]}`` when not confident. The metadata is the job batch object, whose
``errors_with_filename`` (or ``errors_with_file``) lists the inputs that never became jobs as
``"{filename}, {error_message}"`` CSV tuples; the filename of an inline input is its manifest line
(or ``inputs[N]`` / its index, which the client keeps equal to the line).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Mapping
from typing import IO, Any

from airflow_batchcode.exceptions import UnexpectedResponseError
from airflow_batchcode.normalise import Coded, missing
from airflow_batchcode.normalise.index import LineIndex, line_at, nonblank_lines

_INDEXED = re.compile(r"^(?:inputs?\s*\[\s*(\d+)\s*\]|(?:line|input|index)?\s*#?\s*(\d+))$", re.IGNORECASE)


def _errors(metadata: Mapping[str, Any]) -> list[Any]:
    for key in ("errors_with_filename", "errors_with_file"):
        value = metadata.get(key)
        if isinstance(value, list):
            return value
    return []


def split_error(entry: str) -> tuple[str, str]:
    """``"{filename}, {error_message}"`` (plain or CSV-quoted) → ``(filename, message)``."""
    fields = next(csv.reader([entry], skipinitialspace=True), [])
    if len(fields) < 2:
        return entry.strip(), ""
    return fields[0].strip(), ", ".join(field.strip() for field in fields[1:])


def rejected_lines(metadata: Mapping[str, Any], lines: int) -> dict[int, str]:
    """Manifest line → the service's reason, for inputs the batch object reports as invalid."""
    found: dict[int, str] = {}
    for entry in _errors(metadata):
        if not isinstance(entry, str):
            continue
        filename, message = split_error(entry)
        match = _INDEXED.match(filename.strip("'\" "))
        if match is None:
            continue
        line = int(match.group(1) or match.group(2))
        if 0 <= line < lines:
            found.setdefault(line, message or "rejected by the service")
    return found


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _confidence(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _suggestions(items: Any) -> str:
    """The app's suggestions in the shared shape, as JSON text."""
    shared = [
        {
            "codeCategory": _text(item.get("code")),
            "codeLabel": _text(item.get("label")),
            "codeConfidence": _confidence(item.get("confidence")),
        }
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict) and item.get("code") is not None
    ]
    return json.dumps(shared)


def _row(data: dict[str, Any]) -> Coded:
    """One output line → its row."""
    given = data.get("input")
    if not isinstance(given, dict):
        given = {}
    record_id = _text(given.get("record_id"))
    job_id = _text(data.get("job_id"))
    state = str(data.get("state") or "UNKNOWN").upper()
    details = json.dumps({"job_state": state})
    if state != "COMPLETED":
        reason = f"super.ai job {job_id} ended {state}"
        service_error = data.get("error")
        if isinstance(service_error, str) and service_error:
            reason += f": {service_error}"
        return Coded(record_id, "error", error=reason, item_id=job_id, details=details)
    response = data.get("response")
    if not isinstance(response, dict):
        return Coded(
            record_id,
            "error",
            error=f"super.ai job {job_id} completed without a response object",
            item_id=job_id,
            details=details,
        )
    if response.get("code") not in (None, ""):
        return Coded(
            record_id,
            "successful",
            code_category=_text(response["code"]),
            code_label=_text(response.get("label")),
            code_confidence=_confidence(response.get("confidence")),
            item_id=job_id,
            details=details,
        )
    return Coded(
        record_id,
        "unsuccessful",
        suggestions=_suggestions(response.get("suggestions")),
        item_id=job_id,
        details=details,
    )


def _line_of(data: Any, number: int) -> int:
    given = data.get("input") if isinstance(data, dict) else None
    line = given.get("line") if isinstance(given, dict) else None
    if isinstance(line, bool) or not isinstance(line, int):
        raise UnexpectedResponseError(f"super.ai output line {number} does not say which manifest line it codes")
    return line


def _index(output: IO[bytes], lines: int) -> LineIndex:
    """Where each manifest line's output line is; two for one line is an error."""
    index = LineIndex(lines)
    for offset, number, raw in nonblank_lines(output):
        try:
            data = json.loads(raw)
        except ValueError:
            raise UnexpectedResponseError(f"super.ai output line {number} is not JSON") from None
        line = _line_of(data, number)
        if not 0 <= line < lines:
            raise UnexpectedResponseError(
                f"super.ai output line {number} codes manifest line {line}, outside the chunk's {lines} lines"
            )
        if line in index:
            raise UnexpectedResponseError(f"super.ai output holds two jobs for manifest line {line}")
        index[line] = offset
    return index


def coded(output: IO[bytes], metadata: Mapping[str, Any], lines: int) -> Iterator[Coded]:
    """Exactly ``lines`` rows in manifest order: each job's outcome, the service's reason for inputs it
    rejected, or :func:`missing`."""
    index = _index(output, lines)
    rejected = rejected_lines(metadata, lines)

    def absent(line: int) -> Coded:
        reason = rejected.get(line)
        return missing(line) if reason is None else Coded(None, "error", error=f"super.ai rejected the input: {reason}")

    yield from index.in_order(lambda line, offset: _row(json.loads(line_at(output, offset))), absent)


def usage(metadata: Mapping[str, Any]) -> dict[str, float]:
    """``invalid_inputs`` (inputs that never became jobs) and ``jobs`` (jobs created) of the batch."""
    total, valid = metadata.get("batch_total"), metadata.get("valid_count")
    if isinstance(total, int) and isinstance(valid, int) and not isinstance(total, bool) and total >= valid >= 0:
        invalid = max(total - valid, len(_errors(metadata)))
    else:
        invalid = len(_errors(metadata))
    jobs = valid if isinstance(valid, int) and not isinstance(valid, bool) and valid >= 0 else 0
    return {"invalid_inputs": float(invalid), "jobs": float(jobs)}
