"""Code each distinct text once (issue 14), end to end through ``dag.test()`` on SQLite and PostgreSQL warehouses.

The ABS emulator counts what it codes (``records_coded`` by batch and real time, and how often
each text was coded), so each test checks what was *sent*, not only what was loaded.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sqlite3
from collections import Counter
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_pipeline import DAY, seed
from tests.integration.test_pipeline import warehouse as warehouse  # the fixture, shared
from tests.support import admin, batchcode_connection, emulator, run_pipeline, sqlite_warehouse

STRICT_MODEL = "6b1f3c2e-8a4d-4e9b-9c71-2d5e8f0a1b37"
"""The emulator's older ANZSCO model (1.0.0): stricter, so more records fail than with the latest."""
LATEST_MODEL = "d47a9e15-3c6b-4f28-8e0d-5a1b7c9f2e64"
NEXT_DAY = "2026-01-02"
COLUMNS = (
    "record_id",
    "position",
    "code_status",
    "code_category",
    "suggestions",
    "occp_text",
    "tasks_text",
    "source",
    "operation_id",
    "model_id",
    "recode_of",
    "dag_run_id",
)


def rows_of(connect: Any, table: str = "coded_responses", run_id: str | None = None) -> list[dict[str, Any]]:
    with closing(connect()) as conn:
        cursor = conn.cursor()
        cursor.execute(f"SELECT {', '.join(COLUMNS)} FROM {table} ORDER BY dag_run_id, position")
        rows = [dict(zip(COLUMNS, row, strict=True)) for row in cursor.fetchall()]
    return [r for r in rows if run_id is None or r["dag_run_id"] == run_id]


def coded(server: Any) -> tuple[int, int, int, int]:
    """(records coded in batch, in real time, distinct texts coded, most times one text was coded) so far."""
    stats = admin(server, "stats")
    records = stats.get("records_coded", {})
    texts = stats["texts_coded"]
    return records.get("batch", 0), records.get("realtime", 0), texts["distinct"], texts["most_times_one_text"]


def texts(row: dict[str, Any]) -> tuple[str, str]:
    return row["occp_text"] or "", row["tasks_text"] or ""


def sent_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows the service answered (not records rejected before upload)."""
    return [r for r in rows if r["source"] is not None]


def mark(kind: str) -> str:
    return "?" if kind == "sqlite" else "%s"


def test_each_distinct_text_is_sent_once_and_every_row_gets_the_shared_outcome(
    airflow_db: Path, tmp_path: Path, warehouse: tuple[str, Any]
) -> None:
    kind, connect = warehouse
    with closing(connect()) as conn:
        total = seed(conn, mark(kind))
    with emulator() as server, batchcode_connection(server):
        dag_run = run_pipeline(tmp_path, BATCHCODE_TEST_CHUNK="50")
        batch, realtime, distinct, most = coded(server)
        created = admin(server, "stats")["operations_created"]["demo-client"]
    assert dag_run.state == "success"
    rows = rows_of(connect)
    assert len(rows) == total and [r["position"] for r in rows] == list(range(1, total + 1)), "one row per source row"
    answered = sent_rows(rows)
    assert most == 1, "no text was coded twice"
    assert batch == distinct == len({texts(r) for r in answered}), "each distinct valid text sent exactly once"
    assert batch < len(answered), "the sample repeats answers, so fewer records were sent than rows answered"
    assert realtime == 0 and created == math.ceil(batch / 50)
    outcome: dict[tuple[str, str], tuple[Any, ...]] = {}
    for row in answered:
        shared = (row["code_status"], row["code_category"], row["suggestions"], row["operation_id"])
        assert outcome.setdefault(texts(row), shared) == shared, f"row {row['position']} has another outcome"
    ids = Counter(r["record_id"] for r in rows)
    assert ids["DUP"] == 2 and len({r["position"] for r in rows if r["record_id"] == "DUP"}) == 2


@pytest.mark.parametrize("columnar", ["0", "1"], ids=["dbapi", "arrow"])
def test_a_second_night_sends_only_new_texts_and_another_model_misses_the_cache(
    airflow_db: Path, tmp_path: Path, warehouse: tuple[str, Any], columnar: str
) -> None:
    """On the default path and on the Arrow path (``columnar=True``: its extract, and its load filling the
    repeats and cache hits in the same transaction as its bulk write)."""
    kind, connect = warehouse
    with closing(connect()) as conn:
        seed(conn, mark(kind), days=(DAY, NEXT_DAY), sample=300)
    cached_run = {"BATCHCODE_TEST_CACHE": "1", "BATCHCODE_TEST_COLUMNAR": columnar}
    with emulator() as server, batchcode_connection(server):
        first = run_pipeline(tmp_path, DAY, **cached_run)
        batch_first = coded(server)[0]
        second = run_pipeline(tmp_path, NEXT_DAY, **cached_run)
        batch_second = coded(server)[0] - batch_first
        other_model = run_pipeline(tmp_path, NEXT_DAY, **cached_run, BATCHCODE_TEST_MODEL=STRICT_MODEL)
        batch_other = coded(server)[0] - batch_first - batch_second
    assert first.state == second.state == other_model.state == "success"
    night_one = rows_of(connect, run_id=first.run_id)
    night_two = rows_of(connect, run_id=second.run_id)  # the other model's run replaced this run's rows
    assert {r["model_id"] for r in sent_rows(night_one)} == {LATEST_MODEL}, "model=None resolved to the latest"
    known = {texts(r) for r in night_one if r["code_status"] in ("successful", "unsuccessful")}
    day_two_texts = {texts(r) for r in sent_rows(night_two)}
    assert batch_other == len(day_two_texts), "a different model id misses the cache: every distinct text is sent"
    assert {r["model_id"] for r in sent_rows(night_two)} == {STRICT_MODEL}
    assert batch_second == len(day_two_texts - known) > 0, "the second night sent only texts the first did not code"

    # the second night, as the cache answered it (run again with the latest model: all from the cache now)
    with emulator() as server, batchcode_connection(server):
        again = run_pipeline(tmp_path, NEXT_DAY, **cached_run)
        assert coded(server)[0] == 0, "both nights' texts are in the cache for the latest model"
    rows = rows_of(connect, run_id=again.run_id)
    operations = {r["operation_id"] for r in sent_rows(night_one)}
    cached = [r for r in rows if r["source"] == "cache"]
    assert cached and all(r["code_status"] != "error" for r in cached), "errors are never cached"
    assert {r["operation_id"] for r in cached if texts(r) in known} <= operations, "keeps the first operation's id"
    assert len(rows) == len(night_two), "every source row still has its row"


NIGHTLY_DAG = Path(__file__).parents[1] / "dags" / "batchcode_nightly_test.py"


def _nightly(tmp_path: Path) -> Any:
    """The shipped nightly DAG over the test warehouse (tests/dags/batchcode_nightly_test.py)."""
    os.environ["BATCHCODE_TEST_STAGING"] = str(tmp_path / "staging")
    spec = importlib.util.spec_from_file_location("batchcode_nightly_test", NIGHTLY_DAG)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def _night(dag: Any, day: str, conf: dict[str, Any]) -> Any:
    logical = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
    return dag.test(logical_date=logical, run_after=logical, run_conf=conf)


@pytest.mark.parametrize("columnar", ["0", "1"], ids=["dbapi", "arrow"])
def test_a_recode_run_codes_again_only_what_failed(
    airflow_db: Path, tmp_path: Path, warehouse: tuple[str, Any], columnar: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped nightly DAG's re-code mode, on the default path and on the Arrow path."""
    kind, connect = warehouse
    with closing(connect()) as conn:
        seed(conn, mark(kind), sample=300)
    monkeypatch.setenv("BATCHCODE_TEST_COLUMNAR", columnar)
    dag = _nightly(tmp_path)
    day_range = {"from_date": DAY, "to_date": DAY, "recode": True}
    with emulator() as server, batchcode_connection(server):
        night = _night(dag, DAY, {"model": STRICT_MODEL})
        before = coded(server)[0]
        same_model = _night(dag, "2026-02-01", {**day_range, "model": STRICT_MODEL})
        recoded_same = coded(server)[0] - before
        latest = _night(dag, "2026-02-02", {**day_range, "model": LATEST_MODEL})
    assert night.state == same_model.state == latest.state == "success"
    first = rows_of(connect, "coded_nightly", night.run_id)
    failed = {r["record_id"] for r in first if r["code_status"] in ("unsuccessful", "error")}
    assert failed and len(failed) < len(first)
    again = rows_of(connect, "coded_nightly", same_model.run_id)
    assert {r["record_id"] for r in again} == failed, "only the failed records are selected"
    assert all(r["recode_of"] == night.run_id for r in again), "each names the run it re-codes"
    unsuccessful_texts = {texts(r) for r in again if r["code_status"] == "unsuccessful"}
    assert unsuccessful_texts and recoded_same == len({texts(r) for r in sent_rows(again)}), (
        "the same model's cached unsuccessful outcomes were bypassed: every failed text was sent again"
    )
    recoded = rows_of(connect, "coded_nightly", latest.run_id)
    assert {r["record_id"] for r in recoded} == failed, "the same model failed the same records"
    assert all(r["recode_of"] == same_model.run_id for r in recoded), "the latest outcome is the one re-coded"
    with closing(connect()) as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT record_id, code_status, dag_run_id FROM coded_nightly_latest")
        latest_view = {rid: (status, run) for rid, status, run in cursor.fetchall()}
    assert len(latest_view) == len({r["record_id"] for r in first}), "one latest outcome per source record"
    improved = [rid for rid in failed if latest_view[rid][0] == "successful"]
    assert improved, "the latest model codes some of what the strict one could not"
    assert all(latest_view[rid][1] == latest.run_id for rid in failed)
    assert all(latest_view[r["record_id"]][1] == night.run_id for r in first if r["record_id"] not in failed)


def test_a_small_remainder_is_coded_in_real_time_with_the_same_rows(
    airflow_db: Path, tmp_path: Path, warehouse: tuple[str, Any]
) -> None:
    kind, connect = warehouse
    with closing(connect()) as conn:
        total = seed(conn, mark(kind), sample=60)
    with emulator() as server, batchcode_connection(server):
        by_batch = run_pipeline(tmp_path, BATCHCODE_TEST_REALTIME="0")
        batch_rows = rows_of(connect)
        before = admin(server, "stats")["operations_created"]["demo-client"]
        in_realtime = run_pipeline(tmp_path, BATCHCODE_TEST_REALTIME="300")  # the same run again: replaces its rows
        stats = admin(server, "stats")
    assert by_batch.state == in_realtime.state == "success"
    assert stats["operations_created"]["demo-client"] == before, "no operation was created"
    realtime_rows = rows_of(connect)
    assert len(realtime_rows) == total
    assert stats["records_coded"]["realtime"] == len({texts(r) for r in sent_rows(realtime_rows)}) <= 300
    assert {r["source"] for r in sent_rows(realtime_rows)} == {"realtime"}
    assert all(r["operation_id"] is None for r in realtime_rows)
    keep = ("record_id", "position", "code_status", "code_category", "suggestions", "occp_text", "tasks_text")
    assert {r["model_id"] for r in sent_rows(realtime_rows)} == {LATEST_MODEL}, "the rows name the model that coded"
    assert [[r[k] for k in keep] for r in realtime_rows] == [[r[k] for k in keep] for r in batch_rows]


def test_dedupe_off_sends_every_record(airflow_db: Path, tmp_path: Path) -> None:
    path = sqlite_warehouse(tmp_path)
    with closing(sqlite3.connect(path)) as conn:
        seed(conn, "?", sample=100)
    with emulator() as server, batchcode_connection(server):
        dag_run = run_pipeline(tmp_path, BATCHCODE_TEST_DEDUPE="0")
        batch, _, distinct, most = coded(server)
    assert dag_run.state == "success"
    answered = sent_rows(rows_of(lambda: sqlite3.connect(path)))
    assert batch == len(answered) > distinct and most > 1, "every valid record was sent, repeats included"


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_a_model_the_topic_does_not_have_fails_the_extract_naming_the_topics_models(
    airflow_db: Path, tmp_path: Path, warehouse: tuple[str, Any]
) -> None:
    """A typo in the trigger form's model id: refused before any work, with the models there are."""
    from airflow_batchcode.exceptions import ConfigurationError
    from airflow_batchcode.hooks.batchcode import BatchCodeHook

    _, connect = warehouse
    with closing(connect()) as conn:
        seed(conn, "?", sample=50)
    dag = _nightly(tmp_path)
    typo = STRICT_MODEL[:-1] + "8"
    with emulator() as server, batchcode_connection(server):
        hook = BatchCodeHook()
        with pytest.raises(ConfigurationError, match=f"Model '{typo}' is not a model of topic 'anzsco'") as refused:
            hook.resolve_model("anzsco", typo)
        assert hook.resolve_model("anzsco", STRICT_MODEL) == STRICT_MODEL
        assert hook.resolve_model("anzsco", None) == LATEST_MODEL
        night = _night(dag, DAY, {"model": typo})
        stats = admin(server, "stats")
    assert f"{STRICT_MODEL} (version 1.0.0, released " in str(refused.value) and LATEST_MODEL in str(refused.value)
    assert night.state == "failed"
    assert night.get_task_instance("extract").state == "failed"
    assert not stats["operations_created"], "nothing was created, uploaded or coded"
    with closing(connect()) as conn:
        assert not conn.execute("SELECT name FROM sqlite_master WHERE name = 'coded_nightly'").fetchall()


def test_a_cleared_recode_run_selects_again_what_it_selected_and_dates_are_whole_days(
    airflow_db: Path, tmp_path: Path, warehouse: tuple[str, Any]
) -> None:
    """Clearing a re-code run re-codes the same records (not only those it left failed), and a date range
    of the trigger form selects the whole of its last day from a column that holds times."""
    kind, connect = warehouse
    with closing(connect()) as conn:
        total = seed(conn, mark(kind), sample=200)
        conn.cursor().execute("UPDATE survey_responses SET answered_on = answered_on || ' 10:30:00'")
        conn.commit()
    dag = _nightly(tmp_path)
    day = {"from_date": DAY, "to_date": DAY}
    recode = {**day, "recode": True, "model": LATEST_MODEL}
    with emulator() as server, batchcode_connection(server):
        night = _night(dag, DAY, {**day, "model": STRICT_MODEL})
        first = _night(dag, "2026-02-01", recode)
        first_rows = rows_of(connect, "coded_nightly", first.run_id)
        cleared = _night(dag, "2026-02-01", recode)  # the same run id: the run cleared and run again
    assert night.state == first.state == cleared.state == "success"
    assert first.run_id == cleared.run_id
    night_rows = rows_of(connect, "coded_nightly", night.run_id)
    assert len(night_rows) == total, "the last day's answers at 10:30 are in the range"
    failed = {r["record_id"] for r in night_rows if r["code_status"] in ("unsuccessful", "error")}
    fixed = {r["record_id"] for r in first_rows if r["code_status"] == "successful"}
    assert fixed and fixed < failed == {r["record_id"] for r in first_rows}
    again = rows_of(connect, "coded_nightly", cleared.run_id)
    assert {r["record_id"] for r in again} == failed, "the cleared run selected what it selected the first time"
    assert {r["recode_of"] for r in again} == {night.run_id}, "and names the night it re-codes, not itself"
    with closing(connect()) as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT record_id, code_status FROM coded_nightly_latest")
        latest = dict(cursor.fetchall())
    assert all(latest[rid] == "successful" for rid in fixed), "what the re-code fixed stays fixed"
