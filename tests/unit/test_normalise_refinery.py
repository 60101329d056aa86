"""The Refinery normaliser: exports in any order joined to manifest lines, and every outcome's row."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from airflow_batchcode.exceptions import UnexpectedResponseError
from airflow_batchcode.normalise import Coded, reader_for
from airflow_batchcode.normalise.refinery import coded, outcome, split_label, usage


def task(line: Any, status: str = "completed", label: str | None = "2 Professionals", **more: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task_id": f"task_{line}",
        "status": status,
        "data_url": "data:application/json,%7B%7D",
        "metadata": {"line": line, "record_id": f"r{line}"},
        "consensus_label": label,
        "confidence": 0.9,
        "worker_count": 4,
        "agreement_count": 3,
    }
    body.update(more)
    return body


def export(*tasks: dict[str, Any] | str) -> io.BytesIO:
    lines = [t if isinstance(t, str) else json.dumps(t) for t in tasks]
    return io.BytesIO("".join(line + "\n" for line in lines).encode())


def rows(output: io.BytesIO, lines: int) -> list[Coded]:
    return list(coded(output, {}, lines))


def test_out_of_order_tasks_come_back_in_manifest_order() -> None:
    result = rows(export(task(2), task(0, label="7 Machinery Operators and Drivers"), task(1)), 3)
    assert [r.record_id for r in result] == ["r0", "r1", "r2"]
    assert [r.item_id for r in result] == ["task_0", "task_1", "task_2"]
    first = result[0]
    assert first.code_status == "successful"
    assert (first.code_category, first.code_label) == ("7", "Machinery Operators and Drivers")
    assert first.code_confidence == 0.9 and first.agreement == 0.75
    assert json.loads(first.details or "") == {
        "consensus_label": "7 Machinery Operators and Drivers",
        "worker_count": 4,
        "agreement_count": 3,
    }


def test_missing_lines_become_no_result_errors() -> None:
    result = rows(export(task(1)), 3)
    assert [r.code_status for r in result] == ["error", "successful", "error"]
    assert result[0].error == "the service returned no result for manifest line 0"
    assert result[2].error == "the service returned no result for manifest line 2"
    assert [r.error for r in rows(io.BytesIO(b""), 2)] == [
        "the service returned no result for manifest line 0",
        "the service returned no result for manifest line 1",
    ]
    assert rows(io.BytesIO(b""), 0) == []


def test_no_consensus_is_unsuccessful_and_failed_tasks_are_errors() -> None:
    result = rows(
        export(
            task(0, label=None, agreement_count=2),
            task(1, status="failed", label=None, error="data_url is required", worker_count=0, agreement_count=0),
            task(2, status="failed", label=None),
            task(3, status="weird"),
        ),
        4,
    )
    unsuccessful, failed, silent, weird = result
    assert unsuccessful.code_status == "unsuccessful" and unsuccessful.code_category is None
    assert unsuccessful.agreement == 0.5 and unsuccessful.item_id == "task_0"
    assert failed.code_status == "error" and failed.error == "data_url is required" and failed.agreement is None
    assert silent.error == "the Refinery task failed without a reason"
    assert weird.code_status == "error" and "weird" in (weird.error or "")


def test_duplicate_lines_prefer_a_completed_task_then_the_first() -> None:
    result = rows(
        export(
            task(0, status="failed", label=None, error="first try failed"),
            task(0, label="1 Managers"),
            task(1, label="3 Technicians and Trades Workers"),
            task(1, label="8 Labourers"),
            task(2, label="4 Community and Personal Service Workers"),
            task(2, status="failed", label=None, error="late failure"),
        ),
        3,
    )
    assert [r.code_category for r in result] == ["1", "3", "4"]


@pytest.mark.parametrize("line", [3, -1, 10**9, "x", True, 1.5])
def test_tasks_outside_the_manifest_are_refused(line: Any) -> None:
    with pytest.raises(UnexpectedResponseError, match="outside the manifest's 3 lines"):
        rows(export(task(0), task(line)), 3)


def test_unreadable_export_lines_are_refused_and_blank_ones_skipped() -> None:
    with pytest.raises(UnexpectedResponseError, match="export line 2 is not a JSON object"):
        rows(export(task(0), "{not json"), 2)
    with pytest.raises(UnexpectedResponseError, match="not a JSON object"):
        rows(export("[1, 2]"), 1)
    assert [r.code_status for r in rows(export(task(0), "", "   ", task(1)), 2)] == ["successful", "successful"]


def test_tasks_without_a_line_number_cannot_join() -> None:
    orphan = task(0)
    orphan["metadata"] = {}
    stringly = task("1")
    result = rows(export(orphan, stringly, {**task(0), "metadata": "not an object"}), 2)
    assert result[0].code_status == "error" and "line 0" in (result[0].error or "")
    assert result[1].code_status == "successful" and result[1].record_id == "r1"


@pytest.mark.parametrize(
    ("label", "parts"),
    [
        ("2 Professionals", ("2", "Professionals")),
        ("  261 - Software Professionals ", ("261", "Software Professionals")),
        ("3: Trades", ("3", "Trades")),
        ("4", ("4", None)),
        ("cat", (None, "cat")),
        ("2nd best", (None, "2nd best")),
    ],
)
def test_labels_split_into_code_and_text(label: str, parts: tuple[str | None, str | None]) -> None:
    assert split_label(label) == parts


def test_odd_values_do_not_break_a_row() -> None:
    row = outcome(
        {"status": "completed", "consensus_label": "cat", "confidence": "high", "worker_count": 0, "metadata": []}
    )
    assert row.code_status == "successful" and row.code_category is None and row.code_label == "cat"
    assert row.code_confidence is None and row.agreement is None and row.record_id is None and row.item_id is None


def test_usage_reports_failed_tasks() -> None:
    assert usage({"job": {"tasks_failed": 3}}) == {"tasks_failed": 3.0}
    assert usage({"tasks_failed": 2}) == {"tasks_failed": 2.0}
    assert usage({"job": {}}) == {} and usage({}) == {} and usage({"job": "odd"}) == {}


def test_the_registry_finds_this_reader() -> None:
    reader, usage_reader = reader_for("refinery")
    assert reader is coded and usage_reader is usage


def test_a_large_reversed_export_is_joined() -> None:
    lines = 20_000
    tasks = [task(n) for n in reversed(range(lines))]
    result = list(coded(export(*tasks), {}, lines))
    assert len(result) == lines and result[0].record_id == "r0" and result[-1].record_id == f"r{lines - 1}"
