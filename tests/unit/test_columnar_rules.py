"""The vectorised input rules against the row-at-a-time rules of :mod:`airflow_batchcode.records`.

The suspect mask never misses a record :func:`~airflow_batchcode.records.check` rejects (or
:func:`~airflow_batchcode.records.sanitize` repairs), and manifests written from Arrow batches
are byte for byte those written from rows, reasons, repairs and chunk boundaries included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_batchcode.columnar.manifests import write_batch_chunks
from airflow_batchcode.columnar.rules import InputLimits, suspect_mask, utf8_limits
from airflow_batchcode.columnar.text import text_column
from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.manifests import ChunkOptions, write_chunks
from airflow_batchcode.records import as_text, check, sanitize
from airflow_batchcode.services.rules import utf8_rules

TRICKY = ' \t\n\r\x0b\x0c\x1c\x1f\x7f\x85\xa0\u2028\u3000\u0378\ud7ff"\\/é☕\U0001f600aZ09'
texts = st.one_of(
    st.text(alphabet=st.sampled_from(TRICKY), max_size=12),
    st.text(max_size=20),
    st.builds(lambda n, c: c * n, st.integers(0, 320), st.sampled_from("a ")),
    st.none(),
)
records = st.lists(st.tuples(st.one_of(st.none(), st.text(max_size=6), st.integers()), texts, texts), max_size=40)


@settings(max_examples=300, deadline=None)
@given(records)
def test_the_mask_marks_every_record_the_row_rules_reject_or_repair(rows: list[tuple[object, str, str]]) -> None:
    occp = text_column(pa.array([r[1] for r in rows], pa.large_string()))
    tasks = text_column(pa.array([r[2] for r in rows], pa.large_string()))
    mask = suspect_mask(occp, tasks).to_pylist()
    for marked, o, t in zip(mask, occp.to_pylist(), tasks.to_pylist(), strict=True):
        if not marked:
            assert check(o, t).error is None
            assert sanitize(o, t).note is None


def test_the_ascii_mask_marks_exactly_the_characters_outside_printable_ascii() -> None:
    """Arrow's ``ascii_is_printable`` stands in for ``[^\\x20-\\x7e]``: every character up to U+2FFF, alone and
    after ASCII text, is marked exactly when it is outside ``0x20``-``0x7e``."""
    chars = [chr(code) for code in range(0x3000) if not 0xD800 <= code <= 0xDFFF]
    for prefix in ("", "Nurse "):
        occp = text_column(pa.array([prefix + c for c in chars], pa.large_string()))
        tasks = text_column(pa.array(["cares"] * len(chars), pa.large_string()))
        marked = suspect_mask(occp, tasks).to_pylist()
        assert marked == [not 0x20 <= ord(c) <= 0x7E for c in chars]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(texts, texts), max_size=30), st.sampled_from([1, 7, 25]))
def test_the_utf8_mask_marks_every_blank_unprintable_or_oversized_record(
    rows: list[tuple[str, str]], limit: int
) -> None:
    """The UTF-8 services' rules: not both blank, at most ``limit`` bytes (and, for the mask, printable)."""
    for limits in (utf8_limits(limit), InputLimits(max_chars=limit, ascii_only=False)):
        occp = text_column(pa.array([r[0] for r in rows], pa.large_string()))
        tasks = text_column(pa.array([r[1] for r in rows], pa.large_string()))
        mask = suspect_mask(occp, tasks, limits).to_pylist()
        for marked, o, t in zip(mask, occp.to_pylist(), tasks.to_pylist(), strict=True):
            if not marked:
                size = len((o + t).encode()) if limits.max_bytes else len(o + t)
                assert size <= limit and o.isprintable() and t.isprintable() and (o.strip() or t.strip())


def test_limits_validate_themselves() -> None:
    with pytest.raises(ConfigurationError):
        InputLimits(max_chars=0)
    with pytest.raises(ConfigurationError):
        utf8_limits(0)


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())} if folder.exists() else {}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records,
    st.booleans(),
    st.integers(1, 7),
    st.sampled_from([1024, 1500, 1 << 20]),
    st.integers(1, 9),
    st.sampled_from([None, 25, 300]),
)
def test_batches_write_the_row_path_files(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[object, str, str]],
    repair: bool,
    chunk_records: int,
    max_bytes: int,
    batch_rows: int,
    utf8_limit: int | None,
) -> None:
    """ABS's rules (``utf8_limit`` ``None``) or those of a UTF-8 service taking ``utf8_limit`` bytes a record."""
    rules: dict[str, Any] = {} if utf8_limit is None else {"rules": utf8_rules(utf8_limit)}
    limits: dict[str, Any] = {} if utf8_limit is None else {"limits": utf8_limits(utf8_limit)}
    base = tmp_path_factory.mktemp("eq")
    table = pa.table(
        {
            "id": pa.array([None if r[0] is None else str(r[0]) for r in rows], pa.string()),
            "title": pa.array([r[1] for r in rows], pa.string()),
            "duties": pa.array([r[2] for r in rows], pa.string()),
        }
    )
    fields = {"record_id": "id", "occp_text": "title", "tasks_text": "duties"}
    options = ChunkOptions(chunk_records, max_bytes, repair)
    arrow = write_batch_chunks(
        table.to_batches(batch_rows), table.column_names, fields, str(base / "a"), options=options, **rules, **limits
    )
    plain = write_chunks(
        [tuple(r.values()) for r in table.to_pylist()],
        table.column_names,
        fields,
        str(base / "b"),
        options=options,
        **rules,
    )
    assert (arrow.rows, arrow.sent, arrow.rejected, arrow.sanitized) == (
        plain.rows,
        plain.sent,
        plain.rejected,
        plain.sanitized,
    )
    assert [(c.records, c.bytes, c.digest) for c in arrow.chunks] == [
        (c.records, c.bytes, c.digest) for c in plain.chunks
    ]
    assert _files(base / "a") == _files(base / "b")


@pytest.mark.parametrize("kind", [pa.large_binary(), pa.large_string(), pa.string(), pa.binary()])
def test_bytes_that_are_not_utf8_read_as_the_row_path_reads_them(kind: pa.DataType) -> None:
    """A character split across two values, a stray continuation byte and a NULL: checked value by value."""
    values = [b"ok", b"\xe2\x82", b"\xac", b"caf\xc3\xa9", None]
    column = pa.array(values, pa.large_binary()).cast(kind, safe=False)  # Arrow makes such a text column unchecked
    assert text_column(column).to_pylist() == [as_text(value) for value in values]
