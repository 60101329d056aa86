"""The super.ai normaliser: output lines joined to manifest lines, each job state and response shape, usage."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from airflow_batchcode.exceptions import UnexpectedResponseError
from airflow_batchcode.normalise import Coded, missing, reader_for
from airflow_batchcode.normalise.superai import coded, rejected_lines, split_error, usage

SEED_ERROR = (
    '"https://cdn.super.ai/non_existing_file.pdf","Error occurred while fetching the document:'
    'https://cdn.super.ai/non_existing_file.pdf, maximum retries exceeded."'
)


def job(line: int, state: str = "COMPLETED", response: Any = None, **extra: Any) -> dict[str, Any]:
    return {
        "job_id": f"job-{line}",
        "state": state,
        "input": {"line": line, "record_id": f"r{line}"},
        "response": response,
        "error": None,
        **extra,
    }


def output(*jobs: dict[str, Any], blank: bool = False) -> io.BytesIO:
    lines = [json.dumps(j) for j in jobs]
    if blank:
        lines.insert(1, "")
    return io.BytesIO(("\n".join(lines) + "\n").encode())


def rows(out: io.BytesIO, lines: int, metadata: dict[str, Any] | None = None) -> list[Coded]:
    return list(coded(out, metadata or {}, lines))


def test_the_registry_finds_the_reader() -> None:
    assert reader_for("superai") == (coded, usage)


def test_lines_join_in_manifest_order_whatever_the_output_order() -> None:
    out = output(
        job(2, response={"code": None, "suggestions": [{"code": "2613", "label": "Software", "confidence": 0.4}]}),
        job(0, response={"code": "261313", "label": "Software Engineer", "confidence": 0.93}),
        job(1, "FAILED", error="The data program could not process this input"),
        blank=True,
    )
    got = rows(out, 3)
    assert [r.record_id for r in got] == ["r0", "r1", "r2"]
    assert got[0] == Coded(
        "r0",
        "successful",
        code_category="261313",
        code_label="Software Engineer",
        code_confidence=0.93,
        item_id="job-0",
        details='{"job_state": "COMPLETED"}',
    )
    assert got[1].code_status == "error" and got[1].item_id == "job-1"
    assert got[1].error == "super.ai job job-1 ended FAILED: The data program could not process this input"
    assert json.loads(got[1].details or "") == {"job_state": "FAILED"}
    assert got[2].code_status == "unsuccessful" and got[2].code_category is None
    assert json.loads(got[2].suggestions or "") == [
        {"codeCategory": "2613", "codeLabel": "Software", "codeConfidence": 0.4}
    ]


@pytest.mark.parametrize("state", ["CANCELED", "EXPIRED", "SUSPENDED", "in_progress"])
def test_every_unfinished_state_is_an_error_naming_it(state: str) -> None:
    (row,) = rows(output(job(0, state)), 1)
    assert row.code_status == "error" and state.upper() in (row.error or "")
    assert json.loads(row.details or "") == {"job_state": state.upper()}


def test_odd_responses_are_read_leniently_or_reported() -> None:
    out = output(
        job(0, response={"code": 351311, "label": "Chef", "confidence": "0.8"}),
        job(1, response={"code": None, "suggestions": [{"label": "no code"}, "junk", {"code": "1", "label": "M"}]}),
        job(2, response={"code": None}),
        job(3, response=None),
        job(4, response=["not", "an", "object"]),
        job(5, response={"code": "2", "label": "P", "confidence": True}),
    )
    got = rows(out, 6)
    assert (got[0].code_category, got[0].code_confidence) == ("351311", 0.8)
    assert json.loads(got[1].suggestions or "") == [{"codeCategory": "1", "codeLabel": "M", "codeConfidence": None}]
    assert got[2].code_status == "unsuccessful" and got[2].suggestions == "[]"
    assert got[3].code_status == "error" and "without a response" in (got[3].error or "")
    assert got[4].code_status == "error"
    assert got[5].code_status == "successful" and got[5].code_confidence is None


def test_missing_lines_take_the_services_reason_or_say_nothing_came_back() -> None:
    metadata = {
        "batch_total": 6,
        "valid_count": 2,
        "errors_with_filename": [
            "1, job_title is required",
            '"inputs[3]","Input text exceeds the maximum length allowed: 412 > 300, sorry"',
            SEED_ERROR,
            "99, outside the chunk",
            17,
        ],
    }
    out = output(job(0, response={"code": "1", "label": "M", "confidence": 0.5}), job(4, "FAILED"))
    got = rows(out, 6, metadata)
    assert len(got) == 6
    assert got[1] == Coded(None, "error", error="super.ai rejected the input: job_title is required")
    assert (
        got[3].error == "super.ai rejected the input: Input text exceeds the maximum length allowed: 412 > 300, sorry"
    )
    assert got[2] == missing(2) and got[5] == missing(5)


def test_the_docs_example_spelling_is_read_too() -> None:
    got = rows(output(job(0, response={"code": "1"})), 2, {"errors_with_file": ['"1","Document size exceeds 50 MB"']})
    assert got[1].error == "super.ai rejected the input: Document size exceeds 50 MB"


def test_split_error_reads_plain_and_quoted_tuples() -> None:
    assert split_error("3, job_title is required") == ("3", "job_title is required")
    assert split_error(SEED_ERROR) == (
        "https://cdn.super.ai/non_existing_file.pdf",
        "Error occurred while fetching the document:https://cdn.super.ai/non_existing_file.pdf, "
        "maximum retries exceeded.",
    )
    assert split_error("7, a, b") == ("7", "a, b")
    assert split_error("lonely") == ("lonely", "")
    assert rejected_lines({"errors_with_filename": ["line 2, x", "input[0], y", "#1, z", "lonely"]}, 3) == {
        2: "x",
        0: "y",
        1: "z",
    }


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"job_id": "j", "state": "COMPLETED", "input": {"line": 5}}\n', "outside the chunk's 2 lines"),
        ('{"job_id": "j", "state": "COMPLETED", "input": {}}\n', "does not say which manifest line"),
        ('{"job_id": "j", "state": "COMPLETED", "input": {"line": true}}\n', "does not say which manifest line"),
        ("not json\n", "line 1 is not JSON"),
        (json.dumps(job(0)) + "\n" + json.dumps(job(0)) + "\n", "two jobs for manifest line 0"),
    ],
)
def test_off_contract_output_is_refused(text: str, match: str) -> None:
    with pytest.raises(UnexpectedResponseError, match=match):
        rows(io.BytesIO(text.encode()), 2)


def test_an_empty_output_gives_one_error_row_per_line() -> None:
    assert rows(io.BytesIO(b""), 3) == [missing(0), missing(1), missing(2)]
    assert rows(io.BytesIO(b""), 0) == []


def test_usage_counts_invalid_inputs_and_jobs() -> None:
    assert usage({"batch_total": 10, "valid_count": 7, "errors_with_filename": ["1, x"]}) == {
        "invalid_inputs": 3.0,
        "jobs": 7.0,
    }
    seed = {"batch_total": 6, "valid_count": 0, "errors_with_file": [SEED_ERROR]}
    assert usage(seed) == {"invalid_inputs": 6.0, "jobs": 0.0}
    assert usage({"errors_with_filename": ["1, x", "2, y"]}) == {"invalid_inputs": 2.0, "jobs": 0.0}
    assert usage({}) == {"invalid_inputs": 0.0, "jobs": 0.0}
