"""What the pages show, read from the output table (SQL portable across SQLite and PostgreSQL).

Every statement interpolates only the checked table name; values are bound. Aggregates are
computed by the database, so a report over a million rows moves a few dozen numbers (the rejection
chart reads at most :data:`ERROR_TEXTS` distinct error texts and folds them in Python).
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from airflow_batchcode.ui.store import Database

HISTOGRAM_BINS = 10
TOP_CODES = 20
QUEUE_PAGE = 25
DEFAULT_THRESHOLD = 0.6


@dataclass(frozen=True)
class RunReport:
    """The aggregates of one run's rows.

    :param rows_out: rows in the output table.
    :param status: status → rows.
    :param confidence: rows of successful codes per confidence tenth (0 to 0.1, ..., 0.9 to 1).
    :param code_lengths: digits → rows.
    :param top_codes: (code, label, rows), most frequent first.
    :param rejections: (reason, rows), most frequent first.
    """

    rows_out: int
    status: dict[str, int]
    confidence: list[int]
    code_lengths: dict[int, int]
    top_codes: list[tuple[str, str, int]]
    rejections: list[tuple[str, int]] = field(default_factory=list)


ERROR_TEXTS = 5000
"""The most frequent error texts of a run read for the rejection chart (folded into :data:`REASONS` reasons)."""
REASONS = 12
_SPECIFIC = re.compile(r"('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\b\d+\b)")


def reasons(errors: list[tuple[str, int]], most: int = REASONS) -> list[tuple[str, int]]:
    """Error texts and their counts, those that differ only in quoted values or numbers counted together:
    "... ASCII 'é' at character 4" and "... ASCII 'ü' at character 9" are "... ASCII '…' at character N".
    A value every text of a reason shares stays ("... at most 300")."""
    shapes: dict[tuple[str, ...], list[tuple[list[str], int]]] = {}
    for text, count in errors:
        parts = _SPECIFIC.split(text)  # text, value, text, value, ..., text
        shapes.setdefault(tuple(parts[0::2]), []).append((parts, count))
    folded = collections.Counter[str]()
    for texts in shapes.values():
        first = texts[0][0]
        kept = [
            part if i % 2 == 0 or all(parts[i] == part for parts, _ in texts) else ("N" if part[0].isdigit() else "'…'")
            for i, part in enumerate(first)
        ]
        folded["".join(kept)] += sum(count for _, count in texts)
    return folded.most_common(most)


def run_report(db: Database, table: str, dag_id: str, run_id: str) -> RunReport:
    """Aggregate one run's rows of ``table``."""
    where = "WHERE dag_id = ? AND dag_run_id = ?"
    key = (dag_id, run_id)
    statement = f"SELECT code_status, COUNT(*) FROM {table} {where} GROUP BY code_status"  # noqa: S608
    status = {str(s): int(n) for s, n in db.query(statement, key)}
    bins = ", ".join(
        f"SUM(CASE WHEN code_confidence >= {i / HISTOGRAM_BINS} AND code_confidence "
        f"{'<=' if i == HISTOGRAM_BINS - 1 else '<'} {(i + 1) / HISTOGRAM_BINS} THEN 1 ELSE 0 END)"
        for i in range(HISTOGRAM_BINS)
    )
    histogram = db.query(f"SELECT {bins} FROM {table} {where} AND code_confidence IS NOT NULL", key)[0]  # noqa: S608
    lengths = db.query(
        f"SELECT LENGTH(code_category), COUNT(*) FROM {table} {where} AND code_category IS NOT NULL "  # noqa: S608
        "GROUP BY LENGTH(code_category)",
        key,
    )
    top = db.query(
        f"SELECT code_category, MAX(code_label), COUNT(*) FROM {table} {where} AND code_category IS NOT NULL "  # noqa: S608
        f"GROUP BY code_category ORDER BY COUNT(*) DESC, code_category LIMIT {TOP_CODES}",
        key,
    )
    errors = db.query(
        f"SELECT COALESCE(error, code_status), COUNT(*) FROM {table} {where} "  # noqa: S608
        f"AND code_status = 'error' GROUP BY COALESCE(error, code_status) ORDER BY COUNT(*) DESC LIMIT {ERROR_TEXTS}",
        key,
    )
    return RunReport(
        rows_out=sum(status.values()),
        status=status,
        confidence=[int(n or 0) for n in histogram],
        code_lengths={int(n): int(c) for n, c in lengths},
        top_codes=[(str(c), str(label or ""), int(n)) for c, label, n in top],
        rejections=reasons([(str(text), int(count)) for text, count in errors]),
    )


@dataclass(frozen=True)
class Night:
    """One run's volume and success rate on the DAG-level page.

    :param night: the day the run coded (its data interval's start, or the dates its trigger form named,
        marked ``re-code`` for a re-code run), from Airflow; else its load day.
    :param state: the run's state in Airflow (``""``: Airflow no longer knows the run).
    """

    run_id: str
    loaded: str
    rows: int
    successful: int
    night: str = ""
    state: str = ""

    @property
    def success_rate(self) -> float:
        return self.successful / self.rows if self.rows else 0.0


def history(db: Database, table: str, dag_id: str, limit: int = 60) -> list[Night]:
    """The last ``limit`` loaded runs of ``dag_id``, oldest first."""
    rows = db.query(
        f"SELECT dag_run_id, MIN(loaded_at), COUNT(*), "  # noqa: S608
        "SUM(CASE WHEN code_status IN ('successful', 'reviewed') THEN 1 ELSE 0 END) "
        f"FROM {table} WHERE dag_id = ? GROUP BY dag_run_id ORDER BY MIN(loaded_at) DESC LIMIT {int(limit)}",
        (dag_id,),
    )
    return [Night(str(r), str(loaded)[:16], int(n), int(ok or 0)) for r, loaded, n, ok in reversed(rows)]


@dataclass(frozen=True)
class QueueFilter:
    """Which rows the review queue lists.

    :param dag_ids: DAGs the user may read (and that write this table).
    :param run_id: only this run.
    :param day: only rows loaded on this day (UTC).
    :param topic: only this topic.
    :param threshold: successful codes below this confidence are listed too.
    :param errors: list the ``error`` rows too (records the input rules or the service refused), for a
        coder to code by hand.
    :param record_id: only this record's rows, whatever their outcome (reviewed ones too, to correct a
        decision).
    :param after: keyset cursor: (run id, position) of the last row of the previous page.
    """

    dag_ids: tuple[str, ...]
    run_id: str | None = None
    day: date | None = None
    topic: str | None = None
    threshold: float = DEFAULT_THRESHOLD
    after: tuple[str, str, int] | None = None
    errors: bool = False
    record_id: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 1:
            raise ValueError("threshold must be between 0 and 1")


QUEUE_COLUMNS = (
    "dag_id",
    "dag_run_id",
    "position",
    "record_id",
    "topic",
    "code_status",
    "code_category",
    "code_confidence",
    "suggestions",
    "occp_text",
    "tasks_text",
    "error",
)


def review_queue(db: Database, table: str, where: QueueFilter, limit: int = QUEUE_PAGE) -> list[dict[str, Any]]:
    """One page of rows to review, in (dag, run, position) order, after ``where.after`` (keyset paging).

    The ``(dag_id, dag_run_id, position)`` index makes every page an index range scan, so the
    last page of 100,000 rows costs what the first does (no ``OFFSET``).
    """
    if not where.dag_ids:
        return []
    clauses = [f"dag_id IN ({', '.join('?' for _ in where.dag_ids)})"]
    params: list[Any] = [*where.dag_ids]
    if where.record_id is not None:
        clauses.append("record_id = ?")
        params.append(where.record_id)
    else:
        clauses.append(
            "(code_status = 'unsuccessful' OR (code_status = 'successful' AND code_confidence < ?)"
            + (" OR code_status = 'error')" if where.errors else ")")
        )
        params.append(where.threshold)
    if where.run_id:
        clauses.append("dag_run_id = ?")
        params.append(where.run_id)
    if where.day:
        clauses.append("loaded_at >= ? AND loaded_at < ?")
        params += [_day_bound(db, where.day), _day_bound(db, where.day + timedelta(days=1))]
    if where.topic:
        clauses.append("topic = ?")
        params.append(where.topic)
    if where.after:
        dag, run, position = where.after
        clauses.append("(dag_id > ? OR (dag_id = ? AND (dag_run_id > ? OR (dag_run_id = ? AND position > ?))))")
        params += [dag, dag, run, run, position]
    rows = db.query(
        f"SELECT {', '.join(QUEUE_COLUMNS)} FROM {table} WHERE {' AND '.join(clauses)} "  # noqa: S608
        f"ORDER BY dag_id, dag_run_id, position LIMIT {int(limit)}",
        params,
    )
    return [dict(zip(QUEUE_COLUMNS, row, strict=True)) for row in rows]


def _day_bound(db: Database, day: date) -> Any:
    return day.isoformat() if db.sqlite else day


EXPORT_ORDER = "ORDER BY position"


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet takes a cell for a formula by (OWASP's "CSV injection")."""


def spreadsheet_safe(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """``row`` for a CSV download: a text that a spreadsheet would run as a formula (a survey answer
    such as ``=HYPERLINK(...)``) gets a leading ``'``, so it opens as the text it is; the Parquet
    download keeps every value as stored."""
    if not any(type(value) is str and value.startswith(FORMULA_STARTS) for value in row):
        return row
    return tuple("'" + value if type(value) is str and value.startswith(FORMULA_STARTS) else value for value in row)


def export_statement(table: str) -> str:
    """The run's rows in position order, every column (for CSV and Parquet downloads)."""
    return f"SELECT * FROM {table} WHERE dag_id = ? AND dag_run_id = ? {EXPORT_ORDER}"  # noqa: S608
