"""ABS output lines as rows: the typed fast path the pipeline takes, and :class:`Coded` items.

ABS echoes each record's id and input; :func:`chunk_rows`, the pipeline's fast path (a typed
``msgspec`` decoder, no dict), checks each echo against the manifest line at the same place and
re-joins by the echo when the output leaves input order (:mod:`airflow_batchcode.services.abs.order`);
:func:`normalise` is the slow path for any other line shape; both give the same rows.
:func:`coded` reads the same lines as :class:`Coded` items for the generic join.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator, Mapping
from typing import IO, Any

import msgspec

from airflow_batchcode.exceptions import UnexpectedResponseError
from airflow_batchcode.normalise import Coded
from airflow_batchcode.rows import Row, Stamp, new_row
from airflow_batchcode.services.abs import order
from airflow_batchcode.services.abs.settings import SERVICE
from airflow_batchcode.services.abs.wire import model_id_of
from airflow_batchcode.staging import read_positions
from airflow_batchcode.storage import open_staged

_decode = msgspec.json.decode


class _Result(msgspec.Struct):
    codeCategory: Any = None
    codeLabel: Any = msgspec.UNSET
    spaced_label: Any = msgspec.field(default=None, name=" codeLabel")
    codeConfidence: Any = None


class _Input(msgspec.Struct):
    occp_text: Any = None
    tasks_text: Any = None


class _Output(msgspec.Struct):
    """The usual shape of an output line, decoded without a dict; anything else takes :func:`normalise`."""

    recordId: Any = None
    codeStatus: Any = None
    error: Any = None
    result: _Result | None = None
    suggestions: Any = None
    input: _Input | str | None = None


_decode_output = msgspec.json.Decoder(_Output).decode


def normalise(line: bytes) -> tuple[str | None, str, str | None, str | None, float | None, str | None, str | None, Any]:
    """One ABS output line → (record_id, status, category, label, confidence, suggestions JSON, error, input)."""
    try:
        data = _decode(line)
    except msgspec.DecodeError:
        return None, "error", None, None, None, None, "the service returned a line that is not JSON", None
    if not isinstance(data, dict):
        return None, "error", None, None, None, None, "the service returned a line that is not an object", None
    record_id = data.get("recordId")
    record_id = None if record_id is None else str(record_id)
    given = data.get("input")
    if data.get("error"):
        return record_id, "error", None, None, None, None, str(data["error"]).strip(), given
    status = data.get("codeStatus")
    if status == "successful" and isinstance(data.get("result"), dict):
        result = data["result"]
        confidence = result.get("codeConfidence")
        return (
            record_id,
            "successful",
            _str(result.get("codeCategory")),
            _str(result.get("codeLabel", result.get(" codeLabel"))),
            float(confidence) if isinstance(confidence, int | float) else None,
            None,
            None,
            given,
        )
    if status == "unsuccessful":
        suggestions = data.get("suggestions") or []
        return record_id, "unsuccessful", None, None, None, json.dumps(suggestions), None, given
    return record_id, "error", None, None, None, None, f"unexpected output line with codeStatus {status!r}", given


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def chunk_rows(output: str, positions: str, *, manifest: str, stamp: Stamp) -> Iterator[Row]:
    """Normalised rows of one chunk: its output file joined to its manifest and positions.

    Each output line's echoed ``recordId`` and ``input`` are checked against the manifest line
    at the same place; from the first that disagrees on, the rest is re-joined by that key, or
    refused (:mod:`airflow_batchcode.services.abs.order`). Lines of the usual shape go through a
    typed decoder (no dict, no lookups); anything else through :func:`normalise`. Both give the
    same rows. All three files are streamed while the order holds.
    """
    count = 0
    operation_id, chunk = stamp.operation_id, stamp.chunk
    tail = (stamp.topic, stamp.model_id, operation_id, chunk, SERVICE, None, None, None, stamp.source, None)
    with (
        open_staged(output, "result file") as out_lines,
        open_staged(manifest, "manifest") as man_lines,
        open_staged(positions, "positions file") as pos_file,
    ):
        pos_lines = read_positions(pos_file)
        outcomes = map(_outcome, out_lines)
        # zip_longest, not zip: a file that ends early must not swallow the others' next line unseen
        for read, given, place in itertools.zip_longest(outcomes, man_lines, pos_lines):
            if read is None or given is None or place is None:
                raise _misaligned(operation_id, chunk, count, output=read is not None, manifest=given is not None)
            (record_id, outcome), key = read
            position, note = place
            if not order.agrees(order.manifest_key(given), key, record_id):
                rest = order.rejoin(
                    itertools.chain([read], outcomes),
                    itertools.chain([(given, place)], zip(man_lines, pos_lines, strict=False)),
                    operation_id=operation_id,
                    chunk=chunk,
                    matched=count,
                )
                for (found, coded), place, noted in rest:
                    yield new_row(Row, (found, place, *coded, noted, *tail))
                return
            count += 1
            yield new_row(Row, (record_id, position, *outcome, note, *tail))


def chunk_batches(output: str, positions: str, *, manifest: str, stamp: Stamp) -> Iterator[Any]:
    """:func:`chunk_rows`' rows as Arrow record batches: :func:`airflow_batchcode.columnar.results.abs_chunk_batches`,
    imported when called (no pyarrow at DAG parse time)."""
    from airflow_batchcode.columnar.results import abs_chunk_batches

    return abs_chunk_batches(output, positions, manifest=manifest, stamp=stamp)


def _misaligned(
    operation_id: str | None, chunk: int, count: int, *, output: bool, manifest: bool
) -> UnexpectedResponseError:
    """The error for a chunk whose files end at different lines (``output``/``manifest``: that file had one more)."""
    if output == manifest:  # the positions file is the odd one out
        which = f"Positions file of operation {operation_id} (chunk {chunk}) has {'fewer' if output else 'more'}"
    else:
        which = f"Output of operation {operation_id} (chunk {chunk}) has {'more' if output else 'fewer'}"
    return UnexpectedResponseError(
        f"{which} lines than its manifest (matched {count}): refusing to load misaligned results"
    )


Outcome = tuple[tuple[str | None, tuple[Any, ...]], order.Key | None]
"""An output line read: its ``recordId`` with the row's values from ``code_status`` to ``tasks_text``
(position, note and the chunk's columns are added by the join), and the key it echoes (the pair
:func:`~airflow_batchcode.services.abs.order.rejoin` takes)."""


def _outcome(line: bytes) -> Outcome:
    """One output line → its outcome, through the typed decoder (or :func:`_slow_outcome`)."""
    try:
        data = _decode_output(line)
    except msgspec.MsgspecError:
        return _slow_outcome(line)
    record_id = data.recordId
    if record_id is not None and type(record_id) is not str:
        record_id = str(record_id)
    given = data.input
    echoed = type(given) is _Input
    occp, tasks = (given.occp_text, given.tasks_text) if echoed else (None, None)  # type: ignore[union-attr]
    if data.error:
        coded: tuple[Any, ...] = ("error", None, None, None, None, str(data.error).strip(), occp, tasks)
    elif data.codeStatus == "successful" and data.result is not None:
        result = data.result
        label = result.codeLabel if result.codeLabel is not msgspec.UNSET else result.spaced_label
        confidence = result.codeConfidence
        coded = (
            "successful",
            None if result.codeCategory is None else str(result.codeCategory),
            None if label is None else str(label),
            float(confidence) if isinstance(confidence, int | float) else None,
            None,
            None,
            occp,
            tasks,
        )
    elif data.codeStatus == "unsuccessful":
        coded = ("unsuccessful", None, None, None, json.dumps(data.suggestions or []), None, occp, tasks)
    else:
        error = f"unexpected output line with codeStatus {data.codeStatus!r}"
        coded = ("error", None, None, None, None, error, occp, tasks)
    return (record_id, coded), order.output_key(record_id, occp, tasks, echoed)


def _slow_outcome(line: bytes) -> Outcome:
    """An outcome through :func:`normalise`, for lines the typed decoder does not take."""
    record_id, status, category, label, confidence, suggestions, error, given = normalise(line)
    echoed = isinstance(given, dict)
    if not echoed and isinstance(given, str):
        with contextlib.suppress(msgspec.MsgspecError, TypeError):
            key = order.manifest_key(given.encode())
            return (record_id, (status, category, label, confidence, suggestions, error, key[1], key[2])), key
    occp = given.get("occp_text") if echoed else None
    tasks = given.get("tasks_text") if echoed else None
    coded = (status, category, label, confidence, suggestions, error, occp, tasks)
    return (record_id, coded), order.output_key(record_id, occp, tasks, echoed)


def coded(output: IO[bytes], metadata: Mapping[str, Any], lines: int) -> Iterator[Coded]:
    """Each output line as a :class:`Coded` item, in output order (which is manifest order).

    ABS answers one line per manifest line, so the join that reads these refuses an output of any
    other length as misaligned rather than filling gaps.
    """
    for line in output:
        record_id, status, category, label, confidence, suggestions, error, _ = normalise(line)
        yield Coded(record_id, status, category, label, confidence, suggestions, error)


def usage(metadata: Mapping[str, Any]) -> dict[str, float]:
    """ABS reports no usage figures."""
    return {}


def model_id(metadata: Mapping[str, Any]) -> str | None:
    """The id of the model that coded the operation, from the model metadata saved beside the output
    (read leniently: :func:`airflow_batchcode.services.abs.wire.model_id_of`)."""
    return model_id_of(metadata)
