"""The review store and queue SQL on SQLite and PostgreSQL: validation, keyset paging, re-application, latest view."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_batchcode.results import COLUMNS
from airflow_batchcode.ui import queries, reviews
from airflow_batchcode.ui.store import Database
from airflow_batchcode.warehouse import TABLE_COLUMNS, create_table_sql
from tests.support import postgres_database

TABLE = "coded"
RUNS = ("scheduled__2026-01-01", "scheduled__2026-01-02")
PER_RUN = 600


def row(run: str, position: int) -> tuple[Any, ...]:
    """Every third row unsuccessful with suggestions, every fifth a low-confidence success, else a confident one."""
    values = dict.fromkeys(COLUMNS)
    values.update(record_id=f"{run[-2:]}-{position}", position=position, topic="anzsco", chunk=0, service="abs")
    if position % 3 == 0:
        values.update(
            code_status="unsuccessful",
            suggestions=json.dumps([{"codeCategory": "261313", "codeLabel": "Software Engineer"}]),
        )
    elif position % 5 == 0:
        values.update(
            code_status="successful",
            code_category="2613",
            code_label="Software and Applications Programmers",
            code_confidence=0.41,
        )
    else:
        values.update(
            code_status="successful", code_category="261313", code_label="Software Engineer", code_confidence=0.93
        )
    return (
        *(values[c] for c in COLUMNS),
        "nightly",
        run,
        datetime(2026, 1, 2, 3, tzinfo=UTC).replace(tzinfo=None) if run == RUNS[0] else datetime(2026, 1, 3, 3),
    )


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        conn: Any = sqlite3.connect(tmp_path / "w.db")
        mark = "?"
        ctx: Any = None
    else:
        import psycopg2

        ctx = postgres_database()
        fields = ctx.__enter__()
        conn = psycopg2.connect(host=fields["host"], port=fields["port"], user=fields["login"], dbname=fields["schema"])
        mark = "%s"
    with closing(conn):
        cursor = conn.cursor()
        for statement in [*create_table_sql(TABLE), *reviews.review_ddl(TABLE)]:
            cursor.execute(statement)
        rows = [row(run, p) for run in RUNS for p in range(1, PER_RUN + 1)]
        cursor.executemany(
            f"INSERT INTO {TABLE} ({', '.join(TABLE_COLUMNS)}) VALUES ({', '.join([mark] * len(TABLE_COLUMNS))})", rows
        )
        conn.commit()
        yield Database(conn)
    if ctx is not None:
        ctx.__exit__(None, None, None)


def expected_queue(run: str | None = None) -> list[tuple[str, int]]:
    return [(r, p) for r in RUNS for p in range(1, PER_RUN + 1) if (p % 3 == 0 or p % 5 == 0) and run in (None, r)]


def test_keyset_pages_cover_the_queue_once_in_order(db: Database) -> None:
    seen: list[tuple[str, int]] = []
    where = queries.QueueFilter(("nightly",))
    while page := queries.review_queue(db, TABLE, where, limit=37):
        seen += [(r["dag_run_id"], r["position"]) for r in page]
        last = page[-1]
        where = queries.QueueFilter(("nightly",), after=(last["dag_id"], last["dag_run_id"], last["position"]))
    assert seen == expected_queue()


def test_queue_filters_by_run_day_topic_and_threshold(db: Database) -> None:
    by_run = queries.review_queue(db, TABLE, queries.QueueFilter(("nightly",), run_id=RUNS[1]), limit=10_000)
    assert [(r["dag_run_id"], r["position"]) for r in by_run] == expected_queue(RUNS[1])
    by_day = queries.review_queue(
        db, TABLE, queries.QueueFilter(("nightly",), day=datetime(2026, 1, 2).date()), limit=10_000
    )
    assert {r["dag_run_id"] for r in by_day} == {RUNS[0]}
    assert queries.review_queue(db, TABLE, queries.QueueFilter(("nightly",), topic="osca")) == []
    strict = queries.review_queue(db, TABLE, queries.QueueFilter(("nightly",), threshold=0.4), limit=10_000)
    assert {r["code_status"] for r in strict} == {"unsuccessful"}
    assert queries.review_queue(db, TABLE, queries.QueueFilter(("other_dag",))) == []


def test_decisions_are_checked_stored_applied_and_reapplied(db: Database) -> None:
    def decision(**overrides: Any) -> reviews.Decision:
        fields = {
            "dag_id": "nightly",
            "run_id": RUNS[0],
            "position": 3,
            "record_id": "01-3",
            "code": "261313",
            "reviewer": "ann",
        }
        return reviews.Decision(**{**fields, **overrides})

    for bad, status in (
        (decision(code="26131x"), 400),
        (decision(record_id="02-3"), 404),
        (decision(position=10_000), 404),
    ):
        with pytest.raises(reviews.ReviewRejected) as caught:
            reviews.record_decision(db, TABLE, bad)
        assert caught.value.status == status
    assert db.query(f"SELECT COUNT(*) FROM {TABLE}_reviews") == [(0,)]

    reviews.record_decision(db, TABLE, decision(code="2613"))
    stored = reviews.record_decision(db, TABLE, decision())
    assert (stored["old_status"], stored["old_code"], stored["new_label"]) == ("reviewed", "2613", "Software Engineer")
    first, last = (row[0] for row in db.query(f"SELECT reviewed_at FROM {TABLE}_reviews ORDER BY reviewed_at"))
    assert str(first) < str(last), "two decisions in the same second keep their order (microseconds are stored)"
    outcome = "SELECT code_status, code_category FROM {} WHERE dag_run_id = ? AND position = 3"
    assert db.query(outcome.format(TABLE), (RUNS[0],)) == [("reviewed", "261313")]

    # the run's rows reloaded with the service's outcome: the latest decision is applied again
    db.execute(
        f"UPDATE {TABLE} SET code_status = 'unsuccessful', code_category = NULL WHERE dag_run_id = ? AND position = 3",
        (RUNS[0],),
    )
    assert reviews.apply_reviews(db.conn, TABLE, dag_id="nightly", run_id=RUNS[0]) == 1
    assert reviews.apply_reviews(db.conn, TABLE, dag_id="nightly", run_id=RUNS[1]) == 0
    db.conn.commit()
    assert db.query(outcome.format(TABLE), (RUNS[0],)) == [("reviewed", "261313")]
    assert db.query(outcome.format(f"{TABLE}_latest"), (RUNS[0],)) == [("reviewed", "261313")]
    assert db.query(f"SELECT COUNT(*) FROM {TABLE}_latest") == [(2 * PER_RUN,)], (
        "record ids differ per run: one outcome each"
    )


def test_latest_keeps_one_row_per_record_the_same_on_every_database(db: Database) -> None:
    """A record id answered twice in one load: the later source row, on SQLite and PostgreSQL alike.
    Rows without a record id, NULL or empty, are each their own record, in every run."""
    loaded = datetime(2026, 1, 4, 3)
    extra = [
        (*row("extra", 1)[: len(COLUMNS) + 2], loaded),  # the same load, the same record id twice
        (*row("extra", 2)[: len(COLUMNS) + 2], loaded),
        (*row("extra", 3)[: len(COLUMNS) + 2], loaded),  # no record id: NULL and empty
        (*row("extra", 4)[: len(COLUMNS) + 2], loaded),
    ]
    record_at, position_at = COLUMNS.index("record_id"), COLUMNS.index("position")
    extra = [(*r[:record_at], rid, *r[record_at + 1 :]) for r, rid in zip(extra, ["dup", "dup", None, ""], strict=True)]
    columns = ", ".join(TABLE_COLUMNS)
    for values in extra:
        db.execute(f"INSERT INTO {TABLE} ({columns}) VALUES ({', '.join(['?'] * len(TABLE_COLUMNS))})", values)
    db.conn.commit()
    latest = f"SELECT position FROM {TABLE}_latest WHERE dag_run_id = 'extra' ORDER BY position"
    assert [p for (p,) in db.query(latest)] == [2, 3, 4], "the later 'dup' and both rows without an id"
    assert extra[0][position_at] == 1
    before_this_run = reviews.latest_rows_sql(TABLE, where="o.dag_run_id <> 'extra'")
    assert db.query(f"SELECT COUNT(*) FROM ({before_this_run}) l") == [(2 * PER_RUN,)], "the other runs' rows only"


def test_a_decision_follows_its_record_when_a_reload_shifts_positions_and_outranks_later_outcomes(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    decided = reviews.Decision("nightly", RUNS[0], 3, "01-3", "121311", "ann")
    assert reviews.record_decision(db, TABLE, decided)["new_label"] is None, "a real code outside the sample"
    status = f"SELECT position, code_status, code_category FROM {TABLE} WHERE dag_run_id = ? AND record_id = ?"

    # the run reloaded with an answer added before it: every position one further on
    db.execute(f"UPDATE {TABLE} SET position = position + 1 WHERE dag_run_id = ?", (RUNS[0],))
    db.execute(
        f"UPDATE {TABLE} SET code_status = 'unsuccessful', code_category = NULL WHERE dag_run_id = ?", (RUNS[0],)
    )
    assert reviews.apply_reviews(db.conn, TABLE, dag_id="nightly", run_id=RUNS[0]) == 1
    db.conn.commit()
    assert db.query(status, (RUNS[0], "01-3")) == [(4, "reviewed", "121311")], "applied where the record is now"
    assert db.query(status, (RUNS[0], "01-2")) == [(3, "unsuccessful", None)], "not to the row now at position 3"

    # a later run codes the same record again: the reviewer's decision stays its latest outcome
    later = (*row("scheduled__2026-01-09", 3)[: len(COLUMNS) + 2], datetime(2026, 1, 10, 3))
    later = (*later[: COLUMNS.index("record_id")], "01-3", *later[COLUMNS.index("record_id") + 1 :])
    columns = ", ".join(TABLE_COLUMNS)
    db.execute(f"INSERT INTO {TABLE} ({columns}) VALUES ({', '.join(['?'] * len(TABLE_COLUMNS))})", later)
    db.conn.commit()
    latest = f"SELECT dag_run_id, code_status FROM {TABLE}_latest WHERE record_id = '01-3'"
    assert db.query(latest) == [(RUNS[0], "reviewed")]

    # the record gone from a reload: the decision is kept, applied nowhere, and the log says so
    db.execute(f"DELETE FROM {TABLE} WHERE dag_run_id = ? AND record_id = '01-3'", (RUNS[0],))
    with caplog.at_level("WARNING", logger="airflow_batchcode.reviews"):
        assert reviews.apply_reviews(db.conn, TABLE, dag_id="nightly", run_id=RUNS[0]) == 0
    db.conn.commit()
    assert "1 review decision(s) not applied" in caplog.text and "01-3 (not in the reloaded rows)" in caplog.text
    assert db.query(f"SELECT COUNT(*) FROM {TABLE} WHERE code_status = 'reviewed'") == [(0,)]
    assert db.query(f"SELECT COUNT(*) FROM {TABLE}_reviews") == [(1,)]


def test_the_queue_lists_a_records_rows_whatever_their_outcome_when_asked_for_it(db: Database) -> None:
    reviews.record_decision(db, TABLE, reviews.Decision("nightly", RUNS[0], 3, "01-3", "261313", "ann"))
    found = queries.review_queue(db, TABLE, queries.QueueFilter(("nightly",), record_id="01-3"))
    assert [(r["position"], r["code_status"]) for r in found] == [(3, "reviewed")], "a decided row, to correct it"
    confident = queries.review_queue(db, TABLE, queries.QueueFilter(("nightly",), record_id="01-1"))
    assert [r["code_status"] for r in confident] == ["successful"]
    assert queries.review_queue(db, TABLE, queries.QueueFilter(("nightly",), record_id="no-such")) == []


def test_a_reload_applies_each_records_newest_decision_and_none_to_a_duplicated_id(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    def decide(position: int, code: str) -> None:
        reviews.record_decision(db, TABLE, reviews.Decision("nightly", RUNS[0], position, "01-6", code, "ann"))

    def reload(shift: int) -> int:
        db.execute(f"UPDATE {TABLE} SET position = position + ? WHERE dag_run_id = ?", (shift, RUNS[0]))
        db.execute(f"UPDATE {TABLE} SET code_status = 'unsuccessful' WHERE dag_run_id = ?", (RUNS[0],))
        applied = reviews.apply_reviews(db.conn, TABLE, dag_id="nightly", run_id=RUNS[0])
        db.conn.commit()
        return applied

    decide(6, "1213")
    reload(+1)
    decide(7, "2613")
    reload(-1)
    decide(6, "2611")  # the newest decision, made at the position of the first
    assert reload(+1) == 1, "one record, one decision applied"
    code = f"SELECT position, code_category FROM {TABLE} WHERE dag_run_id = ? AND record_id = '01-6'"
    assert db.query(code, (RUNS[0],)) == [(7, "2611")]

    # the decided record's id now on two rows of the run: which one it was cannot be told
    db.execute(f"UPDATE {TABLE} SET record_id = '01-6' WHERE dag_run_id = ? AND position = 8", (RUNS[0],))
    with caplog.at_level("WARNING", logger="airflow_batchcode.reviews"):
        assert reload(0) == 0
    assert "01-6 (on 2 rows)" in caplog.text
    assert db.query(f"SELECT COUNT(*) FROM {TABLE} WHERE code_status = 'reviewed'") == [(0,)]
