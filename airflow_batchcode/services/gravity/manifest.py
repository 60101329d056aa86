"""Gravity's input: the canonical JSONL manifest as a CSV file, and the name it is uploaded under."""

from __future__ import annotations

import csv
import io
import re
from typing import IO, Any

from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.services.base import ManifestSource
from airflow_batchcode.services.parsing import json_object, opened

CSV_MIME = "text/csv; header=present"

CSV_HEADER = ("line", "record_id", "occp_text", "tasks_text")


def _record(raw: bytes, line: int) -> dict[str, Any]:
    record = json_object(raw)
    if record is None or not isinstance(record.get("occp_text"), str) or not isinstance(record.get("tasks_text"), str):
        raise ConfigurationError(f"Manifest line {line} is not a JSON object with occp_text and tasks_text strings")
    return record


def manifest_to_csv(manifest: ManifestSource, sink: IO[bytes]) -> int:
    """Stream the canonical JSONL manifest into ``sink`` as Gravity's CSV input; return the rows written.

    Each row carries its 0-based manifest line number in ``line`` so results join back; blank
    lines are skipped. Quoting follows RFC 4180 (fields with commas, quotes or line breaks quoted).
    """
    text = io.TextIOWrapper(sink, encoding="utf-8", newline="")
    rows = 0
    try:
        writer = csv.writer(text, lineterminator="\r\n")
        writer.writerow(CSV_HEADER)
        with opened(manifest) as source:
            for line, raw in enumerate(source):
                if not raw.strip():
                    continue
                record = _record(raw, line)
                record_id = record.get("recordId")
                writer.writerow(
                    (line, "" if record_id is None else record_id, record["occp_text"], record["tasks_text"])
                )
                rows += 1
        text.flush()
    finally:
        text.detach()
    return rows


def upload_filename(name: str | None) -> str:
    """The ``file`` part's file name (Gravity's default job name): the job name made path-safe."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name or "manifest").strip("._")[:100]
    return f"{stem or 'manifest'}.csv"
