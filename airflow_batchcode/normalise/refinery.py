"""ASG Refinery exports → :class:`Coded` rows, joined to manifest lines by ``metadata.line``.

An export holds one JSON line per settled task, in no particular order. A first pass records
where each manifest line's task starts (a :class:`LineIndex`); a second pass reads the tasks back
in manifest order. Outcomes:

* ``completed`` with a ``consensus_label`` → ``successful``: ``"2 Professionals"`` gives
  ``code_category`` ``"2"`` and ``code_label`` ``"Professionals"`` (a label without a leading code
  keeps ``code_category`` empty); ``code_confidence`` is the task's ``confidence`` and
  ``agreement`` is ``agreement_count / worker_count``;
* ``completed`` without consensus (``consensus_label`` null) → ``unsuccessful``;
* ``failed`` → ``error`` with the task's error.

A manifest line with no task becomes a "no result" error; a task claiming a line outside the
manifest is an :class:`UnexpectedResponseError`. When a line has two tasks (a retried task) a
completed one wins over a failed one, and otherwise the first one read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import IO, Any

from airflow_batchcode.exceptions import UnexpectedResponseError
from airflow_batchcode.normalise import Coded, missing
from airflow_batchcode.normalise.index import LineIndex, line_at, nonblank_lines
from airflow_batchcode.services.parsing import json_object

_LABEL = re.compile(r"^\s*([0-9]+)(?:\s*[-:.)]\s*|\s+|$)(.*)$", re.DOTALL)


def split_label(label: str) -> tuple[str | None, str | None]:
    """``"2 Professionals"`` → ``("2", "Professionals")``; a label without a leading code → ``(None, label)``."""
    match = _LABEL.match(label)
    if match is None:
        return None, label.strip() or None
    return match.group(1), match.group(2).strip() or None


def _line_number(task: Mapping[str, Any], lines: int, where: int) -> int | None:
    """The manifest line a task belongs to; ``None`` when it does not say."""
    metadata = task.get("metadata")
    value = metadata.get("line") if isinstance(metadata, dict) else None
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < lines:
        raise UnexpectedResponseError(
            f"Refinery export line {where + 1} names manifest line {str(value)[:40]!r}, "
            f"outside the manifest's {lines} lines"
        )
    return value


def _task(raw: bytes, where: int) -> dict[str, Any]:
    task = json_object(raw)
    if task is None:
        raise UnexpectedResponseError(f"Refinery export line {where + 1} is not a JSON object")
    return task


def _index(output: IO[bytes], lines: int) -> LineIndex:
    """Where each manifest line's task is in the export; a completed task wins over a failed one."""
    index = LineIndex(lines)
    completed = bytearray(lines)
    for where, (offset, _, raw) in enumerate(nonblank_lines(output)):
        task = _task(raw, where)
        line = _line_number(task, lines, where)
        if line is not None:
            done = task.get("status") == "completed"
            if line not in index or (done and not completed[line]):
                index[line] = offset
                completed[line] = done
    return index


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def outcome(task: Mapping[str, Any]) -> Coded:
    """One task's export line as a :class:`Coded` row."""
    metadata = task.get("metadata")
    record_id = metadata.get("record_id") if isinstance(metadata, dict) else None
    record_id = record_id if isinstance(record_id, str) else None
    task_id = task.get("task_id")
    item_id = str(task_id) if task_id is not None else None
    label = task.get("consensus_label")
    workers, agreeing = task.get("worker_count"), task.get("agreement_count")
    details = json.dumps(
        {"consensus_label": label, "worker_count": workers, "agreement_count": agreeing}, separators=(",", ":")
    )
    count, agree = _number(workers), _number(agreeing)
    agreement = round(agree / count, 4) if count and agree is not None else None
    status = task.get("status")
    if status == "failed":
        error = task.get("error")
        text = str(error)[:1000] if error else "the Refinery task failed without a reason"
        return Coded(record_id, "error", error=text, item_id=item_id, details=details)
    if status != "completed":
        return Coded(record_id, "error", error=f"unexpected Refinery task status {str(status)[:40]!r}", item_id=item_id)
    code_status, code, name = "unsuccessful", None, None  # no consensus
    if isinstance(label, str) and label.strip():
        code_status = "successful"
        code, name = split_label(label)
    return Coded(
        record_id,
        code_status,
        code_category=code,
        code_label=name,
        code_confidence=_number(task.get("confidence")),
        item_id=item_id,
        agreement=agreement,
        details=details,
    )


def coded(output: IO[bytes], metadata: Mapping[str, Any], lines: int) -> Iterator[Coded]:
    """One :class:`Coded` per manifest line, in line order, from a Refinery export."""
    index = _index(output, lines)
    yield from index.in_order(lambda line, offset: outcome(_task(line_at(output, offset), line)), missing)


def usage(metadata: Mapping[str, Any]) -> dict[str, float]:
    """``tasks_failed`` of the job, for the run summary."""
    job = metadata.get("job", metadata)
    failed = _number(job.get("tasks_failed")) if isinstance(job, Mapping) else None
    return {} if failed is None else {"tasks_failed": failed}
