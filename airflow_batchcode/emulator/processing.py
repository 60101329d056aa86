"""Coding of input records: the per-record rules, and the streaming coder of uploaded JSONL files.

Batch operations code a whole file with :func:`code_file` on a worker thread; real-time requests
go through :func:`code_request`. Both apply :func:`record_error`'s rules, in the documented order.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from airflow_batchcode.emulator.coding_model import CodingModel
from airflow_batchcode.emulator.contract import (
    CHUNK,
    MAX_LINE,
    MAX_REALTIME_RECORDS,
    MAX_TEXT,
    MSG_BAD_BODY,
    MSG_INVALID_JSON,
    ApiError,
)
from airflow_batchcode.emulator.files import FileSink

_encode = msgspec.json.encode
_decode = msgspec.json.decode


class InputError(Exception):
    """The input file as a whole is unusable: the operation fails with this message."""


def record_error(record: dict[str, Any]) -> str | None:
    """The per-record rule a record breaks, or ``None``."""
    for name in ("occp_text", "tasks_text"):
        if not isinstance(record.get(name), str):
            return f"Field {name} must be a string"
    rid = record.get("recordId")
    if rid is not None and not isinstance(rid, str):
        return "Field recordId must be a string"
    occp: str = record["occp_text"]
    tasks: str = record["tasks_text"]
    if len(occp) + len(tasks) > MAX_TEXT:
        return f"Input text exceeds the maximum length of {MAX_TEXT} characters"
    if not (occp.isascii() and tasks.isascii() and occp.isprintable() and tasks.isprintable()):
        return "Input text contains characters outside printable ASCII"
    if not occp.strip() and not tasks.strip():
        return "At least one of occp_text and tasks_text must be non-empty"
    return None


def code_record(record: dict[str, Any], model: CodingModel) -> dict[str, Any]:
    """One valid record → the service's response object (without ``input``)."""
    outcome = model.code(record["occp_text"], record["tasks_text"])
    if outcome.status == "successful" and outcome.result is not None:
        return {"recordId": record.get("recordId"), "codeStatus": "successful", "result": outcome.result.to_json()}
    return {
        "recordId": record.get("recordId"),
        "codeStatus": "unsuccessful",
        "suggestions": [s.to_json() for s in outcome.suggestions],
    }


_FIELD_SETS = (frozenset({"occp_text", "tasks_text"}), frozenset({"occp_text", "tasks_text", "recordId"}))


def _fields(keys: frozenset[str]) -> str:
    return "[" + ", ".join(sorted(keys)) + "]"


class _LineCoder:
    """Turns input lines into output lines, caching the encoded tail of repeated inputs."""

    def __init__(self, model: CodingModel, texts: Counter[tuple[str, str]] | None = None) -> None:
        self.model = model
        self.texts = texts
        self.counts: Counter[str] = Counter()
        self._tails: dict[tuple[str, str], tuple[bytes, str]] = {}

    def unknown(self, raw: bytes) -> bytes:
        self.counts["errorCount"] += 1
        text = raw.rstrip(b"\r\n").decode("utf-8", "replace")
        line = {"recordId": "unknown", "codeStatus": "unsuccessful", "input": text, "error": MSG_INVALID_JSON}
        return _encode(line) + b"\n"

    def record(self, record: dict[str, Any]) -> bytes:
        rid = record.get("recordId")
        occp, tasks = record.get("occp_text"), record.get("tasks_text")
        cached = None
        if type(occp) is str and type(tasks) is str and (rid is None or type(rid) is str):
            cached = self._tails.get((occp, tasks))
        if cached is None:
            error = record_error(record)
            if error is not None:
                self.counts["errorCount"] += 1
                inputs = {"occp_text": occp, "tasks_text": tasks}
                out = {"recordId": rid, "codeStatus": "unsuccessful", "input": inputs, "error": error}
                return _encode(out) + b"\n"
            cached = self._tail(record)
            if len(self._tails) >= 100_000:
                self._tails.clear()
            self._tails[(occp, tasks)] = cached  # type: ignore[index]
        tail, status = cached
        self.counts[status] += 1
        if self.texts is not None:
            self.texts[(occp, tasks)] += 1  # type: ignore[index]  # valid records hold text
        return b'{"recordId":' + _encode(rid) + tail

    def _tail(self, record: dict[str, Any]) -> tuple[bytes, str]:
        response = code_record(record, self.model)
        response.pop("recordId")
        status = response.pop("codeStatus")
        body = {"codeStatus": status, "input": {"occp_text": record["occp_text"], "tasks_text": record["tasks_text"]}}
        body.update(response)
        encoded = _encode(body)
        return b"," + encoded[1:] + b"\n", "successfulCount" if status == "successful" else "unsuccessfulCount"


def _lines(source: Any) -> Iterator[tuple[int, bytes]]:
    """Numbered lines of a binary file, each at most :data:`MAX_LINE` bytes (the rest is skipped)."""
    number = 0
    readline = source.readline
    while True:
        raw = readline(MAX_LINE)
        if not raw:
            return
        number += 1
        if len(raw) == MAX_LINE and not raw.endswith(b"\n"):
            rest = raw
            while rest and not rest.endswith(b"\n"):
                rest = readline(MAX_LINE)
        yield number, raw


def code_file(
    source: Path,
    target: Path,
    model: CodingModel,
    cancelled: threading.Event,
    texts: Counter[tuple[str, str]] | None = None,
) -> dict[str, int]:
    """Code a JSONL input file into the output file, streaming; return the counts.

    ``texts`` counts how often each (job title, duties) pair was coded. Raises :class:`InputError`
    for a file that must fail as a whole.
    """
    coder = _LineCoder(model, texts)
    expected: frozenset[str] | None = None
    expected_line = 0
    records = 0
    batch: list[bytes] = []
    with open(source, "rb", buffering=CHUNK) as src, FileSink(target) as out:
        for number, raw in _lines(src):
            line = raw.strip()
            if not line:
                continue
            records += 1
            try:
                value = _decode(line)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                value = None
            if type(value) is not dict:
                batch.append(coder.unknown(raw))
            else:
                keys = frozenset(value)
                if keys != expected:
                    if expected is not None:
                        raise InputError(
                            f"All lines of input must contain the same fields: line {number} has "
                            f"{_fields(keys)} but line {expected_line} has {_fields(expected)}"
                        )
                    if keys not in _FIELD_SETS:
                        raise InputError(
                            "Input records must have the fields occp_text and tasks_text, and optionally "
                            f"recordId: line {number} has {_fields(keys)}"
                        )
                    expected, expected_line = keys, number
                batch.append(coder.record(value))
            if len(batch) >= 4096:
                out.write(b"".join(batch))
                batch.clear()
                if cancelled.is_set():
                    raise InputError("The service is shutting down")
        out.write(b"".join(batch))
    if records == 0:
        raise InputError("The input file is empty")
    return {
        "recordCount": records,
        "successfulCount": coder.counts["successfulCount"],
        "unsuccessfulCount": coder.counts["unsuccessfulCount"],
        "errorCount": coder.counts["errorCount"],
    }


def reorder_lines(path: Path, seed: str) -> None:
    """Shuffle the lines of an output file in place (the reordered-output fault), reproducibly for ``seed``.

    A file of two or more distinct lines always ends up out of its original order.
    """
    lines = path.read_bytes().splitlines(keepends=True)
    shuffled = list(lines)
    random.Random(seed).shuffle(shuffled)
    if shuffled == lines and len(set(lines)) > 1:
        shuffled = shuffled[1:] + shuffled[:1]
    path.write_bytes(b"".join(shuffled))


def code_request(body: bytes, model: CodingModel, texts: Counter[tuple[str, str]] | None = None) -> Any:
    """A real-time request body (one record or a list of 1-300) → its coding, or a 400 :class:`ApiError`.

    ``texts`` counts how often each (job title, duties) pair was coded."""
    try:
        data = _decode(body)
    except (msgspec.DecodeError, RecursionError):
        raise ApiError(400, MSG_BAD_BODY) from None
    records = data if isinstance(data, list) else [data]
    if not 1 <= len(records) <= MAX_REALTIME_RECORDS:
        raise ApiError(400, MSG_BAD_BODY)
    for index, record in enumerate(records):
        if not isinstance(record, dict) or set(record) - {"recordId"} != {"occp_text", "tasks_text"}:
            raise ApiError(400, MSG_BAD_BODY)
        error = record_error(record)
        if error is not None:
            raise ApiError(400, f"{error} (record {index})")
    coded = [code_record(record, model) for record in records]
    if texts is not None:
        texts.update((record["occp_text"], record["tasks_text"]) for record in records)
    return coded if isinstance(data, list) else coded[0]
