"""Review decisions: kept in ``<output_table>_reviews``, applied to the rows, shown by ``<output_table>_latest``.

A decision names one row of one run by ``(dag_id, dag_run_id, position)`` (the record id
is checked too, but it need not be unique) and stores who decided, when, and the old and
new code. Applying a decision sets the row's ``code_status`` to ``reviewed`` and its code
and label to the reviewer's; the loader applies every decision of a run again after it
replaces that run's rows (:func:`apply_reviews`), so re-loading a run never loses a review.
A reloaded run's positions can shift (an answer added to the day, a source query without a
stable order): the latest decision on a record follows its record id, and one whose record cannot
be found for sure (gone, or its id on several rows) is kept in the reviews table but applied to
no row, and the load's log says so.

``<output_table>_latest`` gives each source record's latest outcome: its reviewed row if a reviewer
decided, else the row of the most recently loaded run that coded it. It is rebuilt on every load, so
it follows new columns. The nightly DAG's re-code mode ranks the rows the same way
(:func:`latest_rows_sql`) but leaves out the run's own rows, so that clearing a re-code run
selects again what it selected the first time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from airflow_batchcode.ui.codes import check_code, label_of
from airflow_batchcode.ui.store import Database
from airflow_batchcode.warehouse import check_table_name, run_index_sql

log = logging.getLogger("airflow_batchcode.reviews")
REVIEWED = "reviewed"
REVIEW_COLUMNS = (
    "dag_id",
    "dag_run_id",
    "position",
    "record_id",
    "topic",
    "old_status",
    "old_code",
    "new_code",
    "new_label",
    "reviewer",
    "reviewed_at",
)
_TYPES = {"position": "BIGINT", "reviewed_at": "TIMESTAMP"}
RECORD_KEY = "COALESCE(NULLIF(record_id, ''), dag_run_id || ':' || CAST(position AS TEXT))"
"""What makes rows of different runs the same source record: a record id, else (no id, or an empty one)
the run's own row."""
NEWEST_FIRST = f"CASE WHEN code_status = '{REVIEWED}' THEN 0 ELSE 1 END, loaded_at DESC, dag_run_id DESC, position DESC"
"""A record's rows, latest first: a reviewer's decision before any service outcome (a decision made on
an older row still counts, and a reviewed record is not re-coded), then by load time, then (rows of
one load) the later row of the source, so that a record id answered twice in one run has one latest
row, the same on every database."""


class ReviewRejected(ValueError):
    """A decision that cannot be stored; ``status`` is the HTTP status to answer with.

    :param status: 400 for bad input, 404 for a row the run does not have.
    :param message: what is wrong, for the reviewer.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _index_name(table: str, suffix: str) -> str:
    return f"ix_{table.replace('.', '_')}_{suffix}"


def create_reviews_sql(table: str) -> list[str]:
    """DDL of ``<table>_reviews`` and of an index making the review queue's keyset pages cheap."""
    check_table_name(table)
    columns = ",\n  ".join(f"{name} {_TYPES.get(name, 'TEXT')}" for name in REVIEW_COLUMNS)
    return [
        f"CREATE TABLE IF NOT EXISTS {table}_reviews (\n  {columns}\n)",
        f"CREATE INDEX IF NOT EXISTS {_index_name(table, 'reviews_run')} ON {table}_reviews (dag_id, dag_run_id)",
        run_index_sql(table),  # the output table's own index: created here for tables made before it
    ]


def latest_rows_sql(table: str, *, where: str = "") -> str:
    """A query of each source record's latest row of ``table`` (:data:`RECORD_KEY`, :data:`NEWEST_FIRST`),
    among the rows ``where`` keeps (a condition on ``o``, the table's rows)."""
    check_table_name(table)
    condition = f" WHERE {where}" if where else ""
    return (
        "SELECT * FROM ("  # noqa: S608
        f"SELECT o.*, ROW_NUMBER() OVER (PARTITION BY {RECORD_KEY} ORDER BY {NEWEST_FIRST}) AS outcome_rank "
        f"FROM {table} o{condition}) ranked WHERE outcome_rank = 1"
    )


def latest_view_sql(table: str) -> list[str]:
    """Statements (re)building ``<table>_latest``, the view of :func:`latest_rows_sql` over every row."""
    return [f"DROP VIEW IF EXISTS {table}_latest", f"CREATE VIEW {table}_latest AS {latest_rows_sql(table)}"]


def review_ddl(table: str) -> list[str]:
    """Everything the reviews need beside the output table: their table, the indexes, the latest-outcome view.

    Run by the loader with its own DDL, before (not inside) the transaction that replaces a
    run's rows: on PostgreSQL, DDL on the output table inside concurrent load transactions
    would take conflicting locks.
    """
    return [*create_reviews_sql(table), *latest_view_sql(table)]


def ensure_tables(db: Database, table: str) -> None:
    """Create the reviews table, its indexes and the latest-outcome view when missing (committed)."""
    if db.table_exists(f"{table}_reviews") and db.table_exists(f"{table}_latest"):
        return
    for statement in review_ddl(table):
        db.execute(statement)
    db.conn.commit()


@dataclass(frozen=True)
class Decision:
    """A reviewer's decision about one row.

    :param dag_id: the DAG whose output the row is.
    :param run_id: the run that loaded it.
    :param position: the row's position in its run (unique within the run).
    :param record_id: the row's record id, checked against the row (``None``: the row has none).
    :param code: the code chosen (a suggestion or typed), 1 to 6 digits.
    :param reviewer: who decided (the signed-in user's name).
    """

    dag_id: str
    run_id: str
    position: int
    record_id: str | None
    code: str
    reviewer: str

    def __post_init__(self) -> None:
        if not self.reviewer:
            raise ReviewRejected(401, "a decision needs a signed-in reviewer")
        if not isinstance(self.position, int) or isinstance(self.position, bool) or self.position < 0:
            raise ReviewRejected(400, "position must be a whole number")


def record_decision(db: Database, table: str, decision: Decision) -> dict[str, Any]:
    """Check ``decision`` against the row and the code's form, store it and apply it, in one transaction.

    :raises ReviewRejected: nothing was written.
    :return: the stored review.
    """
    ensure_tables(db, table)
    rows = db.query(
        f"SELECT record_id, topic, code_status, code_category, suggestions FROM {table} "  # noqa: S608
        "WHERE dag_id = ? AND dag_run_id = ? AND position = ?",
        (decision.dag_id, decision.run_id, decision.position),
    )
    if not rows or rows[0][0] != decision.record_id:
        raise ReviewRejected(404, f"run {decision.run_id} has no record {decision.record_id!r} at that position")
    record_id, topic, old_status, old_code, suggestions = rows[0]
    problem = check_code(decision.code)
    if problem:
        raise ReviewRejected(400, problem)
    review = {
        "dag_id": decision.dag_id,
        "dag_run_id": decision.run_id,
        "position": decision.position,
        "record_id": record_id,
        "topic": topic,
        "old_status": old_status,
        "old_code": old_code,
        "new_code": decision.code,
        "new_label": label_of(topic or "", decision.code, suggestions),
        "reviewer": decision.reviewer,
        # to the microsecond: two decisions on a row in the same second keep their order
        "reviewed_at": datetime.now(UTC).replace(tzinfo=None),
    }
    try:
        values = ", ".join("?" for _ in REVIEW_COLUMNS)
        stored = {**review, "reviewed_at": _sqlite_time(review["reviewed_at"])} if db.sqlite else review
        db.execute(
            f"INSERT INTO {table}_reviews ({', '.join(REVIEW_COLUMNS)}) VALUES ({values})",  # noqa: S608
            [stored[name] for name in REVIEW_COLUMNS],
        )
        _apply(
            db, table, [(review["new_code"], review["new_label"], decision.dag_id, decision.run_id, decision.position)]
        )
        db.conn.commit()
    except Exception:
        db.conn.rollback()
        raise
    return review


def _sqlite_time(moment: datetime) -> str:
    """SQLite keeps timestamps as text: always with six fractional digits, so text order is time order."""
    return moment.isoformat(sep=" ", timespec="microseconds")


def _apply(db: Database, table: str, updates: list[tuple[Any, ...]]) -> int:
    statement = db.sql(
        f"UPDATE {table} SET code_status = '{REVIEWED}', code_category = ?, code_label = ? "  # noqa: S608
        "WHERE dag_id = ? AND dag_run_id = ? AND position = ?"
    )
    cursor = db.conn.cursor()
    try:
        cursor.executemany(statement, updates)
    finally:
        cursor.close()
    return len(updates)


def apply_reviews(conn: Any, table: str, *, dag_id: str, run_id: str) -> int:
    """Apply the run's stored decisions (the latest per record) to its freshly loaded rows; the caller commits.

    A decision goes to the one row of the run with its record id (a row without an id: the row at its
    position, if that row has no id either). A decision that cannot be placed for sure (its record
    gone, or its id now on several rows) is logged and applied to no row. Called by
    :func:`airflow_batchcode.warehouse.replace_run_rows` inside its transaction, after the insert, once
    :func:`review_ddl` has run. Only reads the decisions and updates the run's rows.

    :return: the decisions applied.
    """
    db = Database(conn)
    decisions = db.query(
        f"SELECT position, record_id, new_code, new_label FROM {table}_reviews "  # noqa: S608
        "WHERE dag_id = ? AND dag_run_id = ? ORDER BY reviewed_at",
        (dag_id, run_id),
    )
    latest: dict[Any, tuple[int, str | None, str, str]] = {}  # the newest decision per record
    for position, record_id, code, label in decisions:
        latest[record_id or ("no record id", position)] = (position, record_id or None, code, label)
    named = [record_id for _, record_id, _, _ in latest.values() if record_id]
    rows_of: dict[str | None, list[int]] = {}
    for position, record_id in _run_rows(db, table, dag_id, run_id, "record_id", named):
        rows_of.setdefault(record_id, []).append(position)
    unnamed = [position for position, record_id, _, _ in latest.values() if not record_id]
    at_position = dict(_run_rows(db, table, dag_id, run_id, "position", unnamed))
    updates, lost = [], []
    for position, record_id, code, label in latest.values():
        if record_id:
            found = rows_of.get(record_id, [])
            if len(found) == 1:
                updates.append((code, label, dag_id, run_id, found[0]))
            else:
                lost.append(f"{record_id} ({f'on {len(found)} rows' if found else 'not in the reloaded rows'})")
        elif position in at_position and not at_position[position]:
            updates.append((code, label, dag_id, run_id, position))
        else:
            lost.append(f"(no record id) at position {position}")
    if lost:
        log.warning(
            "Run %s: %d review decision(s) not applied, their records not found for sure in the reloaded rows "
            "(kept in %s_reviews; decide again on the new rows): %s",
            run_id, len(lost), table, "; ".join(lost[:20]) + ("; ..." if len(lost) > 20 else ""),
        )  # fmt: skip
    return _apply(db, table, updates)


def _run_rows(
    db: Database, table: str, dag_id: str, run_id: str, column: str, values: list[Any]
) -> Iterator[tuple[int, str | None]]:
    """``(position, record_id)`` of the run's rows whose ``column`` is one of ``values`` (asked 500 at a time)."""
    for start in range(0, len(values), 500):
        some = values[start : start + 500]
        yield from db.query(
            f"SELECT position, record_id FROM {table} WHERE dag_id = ? AND dag_run_id = ? "  # noqa: S608
            f"AND {column} IN ({', '.join('?' for _ in some)})",
            (dag_id, run_id, *some),
        )


def recent_reviews(db: Database, table: str, dag_ids: list[str], limit: int = 10) -> list[tuple[Any, ...]]:
    """The latest decisions on ``dag_ids``' outputs, newest first."""
    if not dag_ids or not db.table_exists(f"{table}_reviews"):
        return []
    marks = ", ".join("?" for _ in dag_ids)
    return db.query(
        f"SELECT reviewed_at, reviewer, dag_id, dag_run_id, record_id, old_status, old_code, new_code, new_label "  # noqa: S608
        f"FROM {table}_reviews WHERE dag_id IN ({marks}) ORDER BY reviewed_at DESC LIMIT {int(limit)}",
        dag_ids,
    )
