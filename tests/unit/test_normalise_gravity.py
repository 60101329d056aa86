"""Unit tests of the Gravity normaliser: joining by line, mappings, outcomes, edge cases, usage."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from airflow_batchcode.exceptions import UnexpectedResponseError
from airflow_batchcode.normalise import Coded, reader_for
from airflow_batchcode.normalise.gravity import coded, usage

HEADER = "line,record_id,job_title,duties,code,label,confidence,error"
DEFAULT_REQUEST = {
    "mimeType": "text/csv; header=present",
    "mapping": [
        {"source": "occp_text", "destination": "job_title", "defaultValue": ""},
        {"source": "tasks_text", "destination": "duties", "defaultValue": ""},
    ],
}
META: dict[str, Any] = {"job": {"id": "j1", "billedUsage": 3}, "request": DEFAULT_REQUEST}


def rows(text: str, lines: int, metadata: dict[str, Any] | None = None, *, newline: str = "\r\n") -> list[Coded]:
    data = text.replace("\n", newline).encode()
    result = list(coded(io.BytesIO(data), META if metadata is None else metadata, lines))
    assert len(result) == lines
    return result


def test_each_outcome_in_manifest_order() -> None:
    out = rows(
        f"{HEADER}\n"
        "0,a,software developer,writing code,261313,Software Engineer,0.92,\n"
        "1,b,worker,various,,,,\n"
        "2,,,,,,,job_title and duties are both empty\n",
        3,
    )
    assert out[0] == Coded("a", "successful", "261313", "Software Engineer", 0.92)
    assert out[1] == Coded("b", "unsuccessful")
    assert out[2] == Coded(None, "error", error="job_title and duties are both empty")


def test_rows_are_joined_by_the_line_column_not_their_position() -> None:
    out = rows(f"{HEADER}\n3,d,t,d,1111,L,0.5,\n0,a,t,d,2222,L,0.6,\n", 5)
    assert [c.record_id for c in out] == ["a", None, None, "d", None]
    assert [c.code_status for c in out] == ["successful", "error", "error", "successful", "error"]
    assert out[1].error == "the service returned no result for manifest line 1"
    assert out[0].code_category == "2222" and out[3].code_category == "1111"


def test_quoted_commas_quotes_and_line_breaks_survive_with_lf_or_crlf() -> None:
    text = f'{HEADER}\n1,"x,y","a ""b""","line\nbreak",1,"Label, with comma",0.3,\n0,z,t,d,2,L,0.4,\n'
    for newline in ("\n", "\r\n"):
        out = rows(text, 2, newline=newline)
        assert out[1] == Coded("x,y", "successful", "1", "Label, with comma", 0.3)
        assert out[0].record_id == "z"


def test_a_byte_order_mark_and_blank_lines_are_ignored() -> None:
    data = ("\ufeff" + HEADER + "\r\n\r\n0,a,t,d,1,L,0.5,\r\n\r\n").encode()
    assert list(coded(io.BytesIO(data), META, 1)) == [Coded("a", "successful", "1", "L", 0.5)]


def test_output_mapping_is_reversed_and_its_defaults_mean_empty() -> None:
    request = {
        **DEFAULT_REQUEST,
        "outputMapping": [
            {"source": "code", "destination": "occupation_code", "defaultValue": "NONE"},
            {"source": "error", "destination": "problem", "defaultValue": None},
            {"source": "confidence", "destination": "score"},
        ],
    }
    header = "line,record_id,job_title,duties,occupation_code,label,score,problem"
    out = rows(
        f"{header}\n0,a,t,d,2544,Nurses,0.7,\n1,b,t,d,NONE,,,\n2,c,,,NONE,,,empty record\n",
        3,
        {"job": {}, "request": request},
    )
    assert out == [
        Coded("a", "successful", "2544", "Nurses", 0.7),
        Coded("b", "unsuccessful"),
        Coded("c", "error", error="empty record"),
    ]


def test_an_input_mapping_of_the_join_columns_is_followed() -> None:
    request = {"mapping": [{"source": "line", "destination": "row"}, {"source": "record_id", "destination": "rid"}]}
    out = rows("row,rid,occp_text,tasks_text,code,label,confidence,error\n0,a,t,d,1,L,0.5,\n", 1, {"request": request})
    assert out == [Coded("a", "successful", "1", "L", 0.5)]


def test_metadata_without_a_request_assumes_the_client_defaults() -> None:
    assert rows(f"{HEADER}\n0,a,t,d,1,L,0.5,\n", 1, {}) == [Coded("a", "successful", "1", "L", 0.5)]


def test_other_model_outputs_and_odd_values_go_into_details() -> None:
    out = rows(
        f"{HEADER},top3,model_version\n"
        '0,a,t,d,1,L,high,,"1,2,3",1.1.0\n'
        "1,b,t,d,2,L,0.5,low confidence,,1.1.0\n"
        "2,c,t,d,,,,,,\n",
        3,
    )
    assert out[0].code_confidence is None
    assert json.loads(out[0].details or "") == {"confidence": "high", "model_version": "1.1.0", "top3": "1,2,3"}
    assert out[1].code_status == "successful" and out[1].error is None
    assert json.loads(out[1].details or "") == {"error": "low confidence", "model_version": "1.1.0"}
    assert out[2] == Coded("c", "unsuccessful")


def test_short_rows_and_non_finite_confidences_are_read_safely() -> None:
    out = rows(f"{HEADER}\n0,a,t,d,1\n1,b,t,d,2,L,nan,\n", 2)
    assert out[0] == Coded("a", "successful", "1")
    assert out[1].code_confidence is None


def test_an_empty_output_file_leaves_every_line_missing() -> None:
    assert [c.code_status for c in rows("", 2)] == ["error", "error"]
    assert rows(f"{HEADER}\n", 1)[0].error == "the service returned no result for manifest line 0"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{HEADER}\n5,a,t,d,1,L,0.5,\n", "row for line 5; the manifest has 2 lines"),
        (f"{HEADER}\n-1,a,t,d,1,L,0.5,\n", "line '-1'"),
        (f"{HEADER}\nfirst,a,t,d,1,L,0.5,\n", "line 'first'"),
        (f"{HEADER}\n0,a,t,d,1,L,0.5,\n0,b,t,d,1,L,0.5,\n", "two rows for manifest line 0"),
        ("record_id,code,error\na,1,\n", "no 'line' column and 1 rows for the manifest's 2 lines"),
        ("record_id,code,error\na,1,\nb,2,\nc,3,\n", "no 'line' column and more rows than"),
        ("line,record_id,job_title\n0,a,t\n", "neither a 'code' nor an 'error' column"),
    ],
)
def test_off_contract_output_is_refused(text: str, message: str) -> None:
    with pytest.raises(UnexpectedResponseError, match=message):
        rows(text, 2)


def test_an_output_without_a_line_column_is_joined_by_order_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="airflow_batchcode.normalise"):
        out = rows("record_id,code,label,error\na,1,L1,\nb,,,no code\n", 2)
    assert out == [Coded("a", "successful", "1", "L1"), Coded("b", "error", error="no code")]
    assert "no 'line' column: its 2 rows are joined to the manifest by order" in caplog.text


def test_bad_bytes_and_unreadable_requests_are_refused() -> None:
    with pytest.raises(UnexpectedResponseError, match="not UTF-8"):
        list(coded(io.BytesIO(HEADER.encode() + b"\n0,\xff,t,d,1,L,0.5,\n"), META, 1))
    with pytest.raises(UnexpectedResponseError, match="recorded request"):
        list(coded(io.BytesIO(HEADER.encode()), {"request": {"mapping": "{broken"}}, 1))


def test_a_large_file_is_streamed_in_order() -> None:
    lines = 20_000
    body = io.StringIO()
    body.write(HEADER + "\r\n")
    for line in reversed(range(lines)):  # the worst case: every row out of order
        body.write(f"{line},r{line},title,duties,{line % 9999},L,0.5,\r\n")
    out = coded(io.BytesIO(body.getvalue().encode()), META, lines)
    for line, item in enumerate(out):
        assert item.record_id == f"r{line}" and item.code_category == str(line % 9999)


def test_usage_is_billed_units_of_a_tenth_of_a_cent() -> None:
    assert usage({"job": {"billedUsage": 20}}) == {"billed_usage_dollars": 0.02, "billed_units": 20.0}
    assert usage({"job": {"billedUsage": 0}}) == {"billed_usage_dollars": 0.0, "billed_units": 0.0}
    for metadata in ({}, {"job": None}, {"job": {"billedUsage": "20"}}, {"job": {"billedUsage": True}}):
        assert usage(metadata) == {}


def test_the_registry_finds_this_reader() -> None:
    assert reader_for("gravity") == (coded, usage)
