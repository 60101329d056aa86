"""The hand-optimised fast paths give exactly what their plain, obvious forms give.

Each fast path (manifest lines encoded a batch at a time, COPY text built a column at a time, the
ABS output decoder's typed path) is checked against the slow form it replaces: a few examples
that name the tricky cases, then Hypothesis properties over arbitrary input.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_batchcode.manifest_json import manifest_lines
from airflow_batchcode.manifests import ChunkOptions, write_chunks
from airflow_batchcode.normalise.abs import chunk_rows, normalise
from airflow_batchcode.pg_copy import copy_block, copy_text
from airflow_batchcode.rows import Row, Stamp
from airflow_batchcode.services.abs import order

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TEXT = st.text(max_size=40)
ASCII = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


# manifest lines ---------------------------------------------------------------------------------


def slow_manifest(ids: list[str] | None, occp: list[str], tasks: list[str]) -> bytes:
    """One ``msgspec`` encode per record: what the manifest's lines must be, byte for byte."""
    records = [
        ({"recordId": ids[i]} if ids is not None else {}) | {"occp_text": occp[i], "tasks_text": tasks[i]}
        for i in range(len(occp))
    ]
    return b"".join(msgspec.json.encode(record) + b"\n" for record in records)


@pytest.mark.parametrize(
    "texts",
    [
        ["plain", 'with "quotes"', "back\\slash", "tab\there", "new\nline", "caf\u00e9", "\u2615", "\x00", ""],
        ["\u2028", "\ud7ff", "\U0001f600", '"', "\\"],
    ],
)
def test_manifest_lines_escape_only_what_json_escapes(texts: list[str]) -> None:
    ids = [f"id-{i}" for i in range(len(texts))]
    assert manifest_lines(ids, texts, list(reversed(texts))) == slow_manifest(ids, texts, list(reversed(texts)))
    assert manifest_lines(None, texts, texts) == slow_manifest(None, texts, texts)


@st.composite
def columns(draw: Any, text: Any = TEXT) -> tuple[list[str] | None, list[str], list[str]]:
    size = draw(st.integers(min_value=0, max_value=20))
    column = st.lists(text, min_size=size, max_size=size)
    ids = draw(st.none() | column)
    return ids, draw(column), draw(column)


@PROPERTY
@given(columns())
def test_manifest_lines_equal_one_encode_per_record(cols: tuple[list[str] | None, list[str], list[str]]) -> None:
    ids, occp, tasks = cols
    assert manifest_lines(ids, occp, tasks) == slow_manifest(ids, occp, tasks)


@PROPERTY
@given(
    st.lists(st.tuples(ASCII, ASCII, ASCII), min_size=1, max_size=60),
    st.integers(min_value=1, max_value=25),
    st.integers(min_value=1024, max_value=2048),
)
def test_chunks_hold_the_same_lines_however_they_are_cut(
    records: list[tuple[str, str, str]], chunk_records: int, max_bytes: int
) -> None:
    rows = [(rid, f"title {occp}", tasks) for rid, occp, tasks in records]
    field_map = {"record_id": "id", "occp_text": "occp", "tasks_text": "tasks"}
    with tempfile.TemporaryDirectory() as folder:
        summary = write_chunks(
            rows, ["id", "occp", "tasks"], field_map, folder, options=ChunkOptions(chunk_records, max_bytes)
        )
        manifests = [Path(chunk.manifest).read_bytes() for chunk in summary.chunks]
        positions = b"".join(Path(chunk.positions).read_bytes() for chunk in summary.chunks)
    ids, occp, tasks = (list(column) for column in zip(*rows, strict=True))
    assert b"".join(manifests) == slow_manifest(ids, occp, tasks), "every record is valid, so every one is sent"
    assert all(chunk.records <= chunk_records and chunk.bytes <= max_bytes for chunk in summary.chunks)
    assert [chunk.bytes for chunk in summary.chunks] == list(map(len, manifests))
    assert summary.sent == len(rows) and positions == b"".join(b"%d\t\n" % (i + 1) for i in range(len(rows)))


# COPY text format --------------------------------------------------------------------------------


def slow_copy(rows: list[tuple[Any, ...]]) -> str:
    """:func:`copy_text` value by value, joined row by row."""
    return "".join("\t".join(map(copy_text, row)) + "\n" for row in rows)


LOADED_AT = datetime(2026, 1, 2, 3, 4, 5, 678)
VALUES = st.one_of(
    st.none(),
    TEXT,
    st.sampled_from(["\\N", "\\", "\t", "\n", "\r", "a\\tb"]),
    st.integers(),
    st.floats(allow_nan=False),
)


@pytest.mark.parametrize(
    "rows",
    [
        [("a", None, 1, 0.5, LOADED_AT), ("b", None, 2, None, LOADED_AT)],
        [("x\\y", "\\N", None, 1), (None, "tab\there", 3, 2.5)],
        [("same", "same"), ("same", "same")],
        [("line\nbreak", "cr\r"), ("", "")],
    ],
)
def test_copy_block_examples(rows: list[tuple[Any, ...]]) -> None:
    assert copy_block(rows) == slow_copy(rows)


@st.composite
def table(draw: Any, kinds_allowed: tuple[str, ...] = ("text", "number", "mixed", "constant")) -> list[tuple[Any, ...]]:
    width = draw(st.integers(min_value=1, max_value=8))
    height = draw(st.integers(min_value=1, max_value=12))
    kinds = draw(st.lists(st.sampled_from(kinds_allowed), min_size=width, max_size=width))
    columns: list[list[Any]] = []
    for kind in kinds:
        if kind == "text":
            values = st.none() | TEXT | st.sampled_from(["\\N", "\\", "\t"])
        elif kind == "number":
            values = st.none() | st.integers() | st.floats(allow_nan=False)
        elif kind == "constant":
            value = draw(st.none() | TEXT | st.just(LOADED_AT))
            columns.append([value] * height)
            continue
        else:
            values = VALUES
        columns.append(draw(st.lists(values, min_size=height, max_size=height)))
    return list(zip(*columns, strict=True))


@PROPERTY
@given(table())
def test_copy_block_equals_copy_text_value_by_value(rows: list[tuple[Any, ...]]) -> None:
    block = copy_block(rows)
    assert block is None or block == slow_copy(rows)


@PROPERTY
@given(table(("text", "number", "constant")))
def test_copy_block_takes_columns_of_text_numbers_and_nulls(rows: list[tuple[Any, ...]]) -> None:
    assert copy_block(rows) == slow_copy(rows)


# the ABS output decoder --------------------------------------------------------------------------


def slow_rows(lines: list[bytes], positions: list[tuple[int, str | None]]) -> list[Row]:
    """:func:`normalise` line by line: the ABS rows by the general decoder."""
    rows = []
    for line, (position, note) in zip(lines, positions, strict=True):
        record_id, status, category, label, confidence, suggestions, error, _ = normalise(line)
        _, occp, tasks = echoed_key(line)
        rows.append(
            Row(
                *(record_id, position, status, category, label, confidence, suggestions, error, occp, tasks, note),
                *("anzsco", "m1", "op-1", 1, "abs", None, None, None, "batch"),
            )
        )
    return rows


def echoed_key(line: bytes) -> tuple[Any, Any, Any]:
    """What an output line echoes of its record, by the general decoder: (record id, occp_text, tasks_text).

    An echo given as a JSON text (not an object) is read as the manifest line it quotes.
    """
    record_id, *_, given = normalise(line)
    if isinstance(given, dict):
        return record_id, given.get("occp_text"), given.get("tasks_text")
    if isinstance(given, str):
        with contextlib.suppress(msgspec.MsgspecError, TypeError):
            return order.manifest_key(given.encode())
    return record_id, None, None


def fast_rows(lines: list[bytes], positions: list[tuple[int, str | None]]) -> list[Row]:
    """The fast path over a manifest each line answers in order (so no re-join is needed)."""
    with tempfile.TemporaryDirectory() as folder:
        output, sidecar = Path(folder, "output.jsonl"), Path(folder, "chunk.positions")
        manifest = Path(folder, "chunk.jsonl")
        output.write_bytes(b"".join(lines))
        sidecar.write_text("".join(f"{p}\t{n or ''}\n" for p, n in positions))
        keys = [echoed_key(line) for line in lines]
        manifest.write_text(
            "".join(json.dumps({"recordId": r, "occp_text": o, "tasks_text": t}) + "\n" for r, o, t in keys)
        )
        stamp = Stamp(chunk=1, operation_id="op-1", topic="anzsco", model_id="m1")
        return list(chunk_rows(str(output), str(sidecar), manifest=str(manifest), stamp=stamp))


JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT
JSON = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3))
LABEL = st.none() | TEXT | st.integers()
RESULT = st.fixed_dictionaries(
    {},
    optional={
        "codeCategory": st.none() | st.from_regex(r"\A[0-9]{1,6}\Z") | st.integers(),
        "codeLabel": LABEL,
        " codeLabel": LABEL,
        "codeConfidence": st.floats(0, 1) | st.integers(0, 1) | JSON_LEAF,
    },
)
INPUT = st.fixed_dictionaries({}, optional={"occp_text": JSON_LEAF, "tasks_text": JSON_LEAF})
USUAL_LINE = st.fixed_dictionaries(
    {"recordId": st.none() | TEXT | st.integers(), "codeStatus": st.sampled_from(["successful", "unsuccessful"])},
    optional={
        "result": RESULT,
        "error": st.none() | st.just("") | TEXT,
        "suggestions": st.none() | st.lists(st.fixed_dictionaries({"code": TEXT, "confidence": st.floats(0, 1)})),
        "input": INPUT | TEXT,
    },
)
"""The shape the service sends: the typed decoder's path."""
ODD_LINE = st.fixed_dictionaries(
    {},
    optional={
        "recordId": JSON_LEAF,
        "codeStatus": st.sampled_from(["successful", "unsuccessful", "pending"]) | JSON_LEAF,
        "error": JSON_LEAF,
        "result": RESULT | JSON,
        "suggestions": JSON,
        "input": INPUT | JSON,
        "other": JSON,
    },
)
"""Any object: values of other types than the typed decoder takes fall back to :func:`normalise`."""
RAW_LINE = st.one_of(
    USUAL_LINE.map(lambda data: json.dumps(data).encode() + b"\n"),
    ODD_LINE.map(lambda data: json.dumps(data).encode() + b"\n"),
    st.sampled_from([b"not json\n", b"[1, 2]\n", b'"text"\n', b"null\n", b"{}\n"]),
)


def test_abs_decoder_examples() -> None:
    lines = [
        b'{"recordId":"1","codeStatus":"successful","result":{"codeCategory":"261312","codeLabel":"Developer",'
        b'"codeConfidence":0.9},"input":{"occp_text":"dev","tasks_text":"code"}}\n',
        b'{"recordId":2,"codeStatus":"successful","result":{" codeLabel":"Spaced","codeConfidence":1}}\n',
        b'{"recordId":"3","codeStatus":"unsuccessful","suggestions":[{"code":"1"}]}\n',
        b'{"recordId":"4","error":"  bad line  "}\n',
        b'{"recordId":"5","codeStatus":"odd"}\n',
        b'{"recordId":"6","codeStatus":"successful","result":[1]}\n',
        b"not json\n",
    ]
    positions = [(i + 1, "sanitized: folded whitespace" if i == 2 else None) for i in range(len(lines))]
    rows = fast_rows(lines, positions)
    assert rows == slow_rows(lines, positions)
    assert [r.code_status for r in rows] == [
        "successful",
        "successful",
        "unsuccessful",
        "error",
        "error",
        "error",
        "error",
    ]
    assert rows[1].record_id == "2" and rows[1].code_label == "Spaced" and rows[1].code_confidence == 1.0
    assert rows[3].error == "bad line" and rows[2].note == "sanitized: folded whitespace"


@PROPERTY
@given(st.lists(RAW_LINE, max_size=15), st.data())
def test_abs_decoder_fast_path_equals_normalise(lines: list[bytes], data: Any) -> None:
    notes = data.draw(st.lists(st.none() | st.sampled_from(["sanitized: x"]), min_size=len(lines), max_size=len(lines)))
    positions = [(i * 3 + 1, note) for i, note in enumerate(notes)]
    assert fast_rows(lines, positions) == slow_rows(lines, positions)
