"""How the Refinery emulator codes a manifest: each line's ``data_url`` read (an object on the S3
endpoint by ``s3://`` or presigned https URL, or a ``data:`` URL), coded, and answered by simulated
workers who reach (or miss) a consensus."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

import msgspec

from airflow_batchcode.emulator.coding_model import CodingModel
from airflow_batchcode.emulator.refinery_jobs import Job

MAX_LINE = 1 << 20

_decode = msgspec.json.decode

_LEADING_CODE = re.compile(r"^\s*([0-9]+)")


def lines_of(source: Any) -> Any:
    """Lines of a binary file, each at most :data:`MAX_LINE` bytes (a longer one is cut, the rest skipped)."""
    while raw := source.readline(MAX_LINE):
        if len(raw) == MAX_LINE and not raw.endswith(b"\n"):
            rest = raw
            while rest and not rest.endswith(b"\n"):
                rest = source.readline(MAX_LINE)
        yield raw


class TaskCoder:
    """Turns one manifest line into one export line: decode the ``data_url``, code it, simulate workers.

    :param job: the job (label spec, threshold, id).
    :param models: topic → models, as :func:`load_models` returns.
    :param failure_rate: share of tasks failed on purpose, chosen by a hash of the record (its texts
        and metadata, not its URL), so runs of the same records with the same seed fail the same ones.
    :param seed: mixes into that hash.
    :param fetch: reads a record object by its ``s3://``, ``gs://`` or http(s) URL (``ValueError`` when it
        cannot); ``None`` reads ``data:`` URLs only.
    """

    def __init__(
        self,
        job: Job,
        models: dict[str, list[CodingModel]],
        failure_rate: float,
        seed: int,
        fetch: Callable[[str], bytes] | None = None,
    ) -> None:
        question = str(job.label_spec["question"]).lower()
        topic = "osca" if "osca" in question else "anzsco"
        self.model = models[topic][-1]
        self.options: list[str] = job.label_spec["options"]
        self.by_code: dict[str, str] = {}
        for option in self.options:
            match = _LEADING_CODE.match(option)
            if match:
                self.by_code.setdefault(match.group(1), option)
        self.job = job
        self.failure_rate = failure_rate
        self.seed = seed
        self.fetch = fetch

    def task(self, raw: bytes, number: int) -> dict[str, Any]:
        """The export line of manifest line ``number``."""
        task_id = "task_" + hashlib.sha256(f"{self.job.id}:{number}".encode()).hexdigest()[:20]
        try:
            line = _decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            line = None
        if not isinstance(line, dict):
            return _failed(task_id, {}, None, f"manifest line {number + 1} is not a JSON object")
        metadata = line.get("metadata", {})
        url = line.get("data_url")
        if not isinstance(url, str) or not url:
            return _failed(task_id, metadata, None, "data_url is required")
        try:
            if self.fetch is not None and url.startswith(("s3://", "gs://", "http://", "https://")):
                occp, tasks = record_texts(self.fetch(url))
            else:
                occp, tasks = decode_data_url(url)
        except ValueError as exc:
            return _failed(task_id, metadata, url, str(exc))
        # the record decides, not its URL (a staged record's object or presigned URL differs between runs)
        record = f"{self.seed}:{json.dumps(metadata, sort_keys=True, default=str)}:{occp}\0{tasks}"
        digest = hashlib.sha256(record.encode()).digest()
        if int.from_bytes(digest[:4], "big") / 2**32 < self.failure_rate:
            return _failed(task_id, metadata, url, "no worker could complete the task")
        return {
            "task_id": task_id,
            "status": "completed",
            "data_url": url,
            "metadata": metadata,
            **self.label(occp, tasks),
        }

    def label(self, occp: str, tasks: str) -> dict[str, Any]:
        """Consensus fields for a record: the label, confidence and the simulated workers."""
        outcome = self.model.code(occp, tasks)
        best = outcome.result or (outcome.suggestions[0] if outcome.suggestions else None)
        confidence = best.confidence if best else 0.0
        spread = int.from_bytes(hashlib.sha256(f"{occp}\x00{tasks}".encode()).digest()[:4], "big")
        workers = self.job.threshold + (1 if spread % 4 == 0 else 0)
        if outcome.status == "successful" and confidence >= 0.5:
            agreement = workers
        elif outcome.status == "successful":
            agreement = workers - 1
        else:
            agreement = max(1, self.job.threshold - 1 - spread % 2)
        option = self.by_code.get(best.category[:1]) if best else None
        if option is None:
            option = self.options[spread % len(self.options)]
        return {
            "consensus_label": option if agreement >= self.job.threshold else None,
            "confidence": round((agreement / workers) * (0.5 + 0.5 * confidence), 2),
            "worker_count": workers,
            "agreement_count": agreement,
        }


def _failed(task_id: str, metadata: Any, url: str | None, error: str) -> dict[str, Any]:
    line: dict[str, Any] = {"task_id": task_id, "status": "failed"}
    if url is not None:
        line["data_url"] = url[:4096]
    line.update(
        metadata=metadata, consensus_label=None, confidence=None, worker_count=0, agreement_count=0, error=error
    )
    return line


def decode_data_url(url: str) -> tuple[str, str]:
    """``(occp_text, tasks_text)`` from a ``data:`` URL; ``ValueError`` says what is wrong."""
    if url.startswith(("http://", "https://")):
        raise ValueError(
            "data_url could not be fetched: the emulator only reads data: URLs and objects on its S3 endpoint"
        )
    if not url.startswith("data:"):
        raise ValueError("data_url must be a data: or http(s) URL")
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise ValueError("data_url is not a valid data: URL")
    try:
        data = base64.b64decode(payload, validate=True) if header.endswith(";base64") else unquote_to_bytes(payload)
        text = data.decode("utf-8")
    except ValueError:
        raise ValueError("data_url content could not be decoded") from None
    media = header.split(";", 1)[0].strip().lower() or "text/plain"
    if media == "text/plain":
        return text.strip(), ""
    return record_texts(text.encode())


def record_texts(data: bytes) -> tuple[str, str]:
    """``(occp_text, tasks_text)`` of a record's JSON object; ``ValueError`` when it is not one."""
    try:
        record = _decode(data)
    except (msgspec.DecodeError, RecursionError):
        record = None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("occp_text"), str)
        or not isinstance(record.get("tasks_text"), str)
    ):
        raise ValueError("data_url content must be a JSON object with string occp_text and tasks_text")
    return record["occp_text"], record["tasks_text"]
