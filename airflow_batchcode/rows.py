"""One normalised output row: what the result readers produce, the run summary counts and the load writes.

A :class:`Row` is a ``NamedTuple``, so it is still a plain tuple to the database drivers
(psycopg's ``COPY`` and ``executemany`` take it as it is) while code reads its fields by name.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Row(NamedTuple):
    """One record's outcome as the output table holds it (the loader adds ``dag_id``, ``dag_run_id``, ``loaded_at``).

    :param record_id: the record's id, when the extract had one.
    :param position: the record's 1-based position in the extract (unique within a run).
    :param code_status: ``successful``, ``unsuccessful`` or ``error``.
    :param code_category: the code, when coded.
    :param code_label: the code's label, when coded.
    :param code_confidence: the service's confidence in the code.
    :param suggestions: JSON text of the suggested codes of an ``unsuccessful`` record.
    :param error: why the record was not coded.
    :param occp_text: the job title sent.
    :param tasks_text: the duties sent.
    :param note: what sanitising changed, if anything.
    :param topic: the topic coded against.
    :param model_id: the model that coded it.
    :param operation_id: the remote operation (``None`` for records rejected before upload).
    :param chunk: the chunk's index (``None`` for records rejected before upload).
    :param service: the service that coded it.
    :param item_id: the service's own id of the record's task or job (Refinery task, super.ai job).
    :param agreement: the share of workers agreeing on Refinery's consensus label.
    :param details: JSON text of other service-specific values.
    :param source: how the outcome was obtained: ``batch`` (a remote operation), ``realtime`` (the
        service's real-time endpoint) or ``cache`` (an earlier run's outcome for the same texts,
        :mod:`airflow_batchcode.result_cache`); ``None`` for records rejected before upload.
    :param recode_of: the earlier run whose outcome this row re-codes (re-code runs only).
    """

    record_id: str | None
    position: int
    code_status: str
    code_category: str | None
    code_label: str | None
    code_confidence: float | None
    suggestions: str | None
    error: str | None
    occp_text: str | None
    tasks_text: str | None
    note: str | None
    topic: str
    model_id: str | None
    operation_id: str | None
    chunk: int | None
    service: str | None
    item_id: str | None
    agreement: float | None
    details: str | None
    source: str | None = None
    recode_of: str | None = None


class Stamp(NamedTuple):
    """What every row of one chunk is stamped with, whichever reader makes the rows (:class:`Row`'s fields)."""

    chunk: int
    operation_id: str | None
    topic: str
    model_id: str | None
    source: str = "batch"


COLUMNS: tuple[str, ...] = Row._fields
"""Columns of a normalised row, in order."""

new_row: Any = tuple.__new__
"""``new_row(Row, values)``: a :class:`Row` from a tuple of all its values, for the readers' hot loops
(a C call, a third of the cost of ``Row(*values)``; the values must be complete and in order)."""
