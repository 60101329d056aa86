"""Frugal coding's parts: the texts digest, the extract's choice (:class:`TextReuse`), and the cache and the
load's fill (:mod:`airflow_batchcode.result_cache`) on a real SQLite database."""

from __future__ import annotations

import io
import sqlite3
from typing import Any

from airflow_batchcode.dedupe import DIGEST_MEMO, TextReuse, text_digest
from airflow_batchcode.result_cache import LOOKUP_BATCH, CacheKey, ResultCache, RunFill
from airflow_batchcode.rows import Row
from airflow_batchcode.staging import CACHED, DUPLICATE, REJECTED, SENT, read_reused
from airflow_batchcode.summary import RunSummary
from airflow_batchcode.warehouse import TABLE_COLUMNS, prepare_table

KEY = CacheKey("abs", "anzsco", "model-1")


class FakeCache:
    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.asked: list[list[str]] = []

    def hits(self, digests: Any) -> set[str]:
        self.asked.append(list(digests))
        return self.known & set(digests)


def test_the_digest_keeps_the_two_texts_apart() -> None:
    assert text_digest("ab", "c") != text_digest("a", "bc")
    assert text_digest("nurse", "") == text_digest("nurse", "") != text_digest("", "nurse")
    assert len(text_digest("x", "y")) == 32


def test_repeats_are_listed_as_duplicates_of_the_first_row_and_the_rest_is_sent() -> None:
    sink = io.BytesIO()
    reuse = TextReuse(sink, dedupe=True, cache=None, list_sent=False)
    ids = ["a", "b", "c", "d"]
    batch = (ids, ["nurse", "cook", "nurse", "cook"], ["", "", "", ""], range(1, 5), {2: "folded whitespace"})
    kept_ids, occp, _, positions, notes = reuse.select(batch)
    assert (kept_ids, occp, list(positions), notes) == (["a", "b"], ["nurse", "cook"], [1, 2], {})
    second = reuse.select((["e"], ["cook"], [""], [5], {}))  # a later batch repeats an earlier one's text
    assert second[1] == []
    lines = list(read_reused(sink.getvalue().splitlines()))
    assert [(r.position, r.kind, r.first, r.record_id, r.note) for r in lines] == [
        (3, DUPLICATE, 1, "c", "folded whitespace"),
        (4, DUPLICATE, 2, "d", None),
        (5, DUPLICATE, 2, "e", None),
    ]
    assert (reuse.counts.distinct, reuse.counts.duplicates, reuse.counts.cached) == (2, 3, 0)


def test_cached_texts_are_not_sent_unless_the_record_re_codes() -> None:
    sink = io.BytesIO()
    cache = FakeCache({text_digest("nurse", ""), text_digest("cook", "")})
    reuse = TextReuse(sink, dedupe=True, cache=cache, list_sent=True)
    batch = (None, ["nurse", "teacher", "cook"], ["", "", ""], [1, 2, 3], {1: "note"})
    _, occp, _, positions, notes = reuse.select(batch, recode_of=[None, None, "run-0"])
    assert occp == ["teacher", "cook"] and list(positions) == [2, 3] and notes == {0: "note"}
    assert cache.asked == [[text_digest("nurse", ""), text_digest("teacher", "")]], "a re-code is not looked up"
    kinds = {(r.position, r.kind, r.recode_of) for r in read_reused(sink.getvalue().splitlines())}
    assert kinds == {(1, CACHED, None), (2, SENT, None), (3, SENT, "run-0")}
    reuse.rejected(9, "z", "run-0")
    reuse.rejected(10, "y", None)  # not a re-code: nothing to list
    last = list(read_reused(sink.getvalue().splitlines()))[-1]
    assert (last.position, last.kind, last.recode_of) == (9, REJECTED, "run-0")


def test_without_dedupe_every_record_is_sent() -> None:
    reuse = TextReuse(io.BytesIO(), dedupe=False, cache=None, list_sent=False)
    batch = (None, ["nurse", "nurse"], ["", ""], [1, 2], {})
    assert reuse.select(batch) is batch


def _db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    prepare_table(conn.cursor(), "out")
    conn.execute("CREATE INDEX ix_out_pos ON out (dag_id, dag_run_id, position)")
    return conn


def _row(position: int, status: str, occp: str, **values: Any) -> tuple[Any, ...]:
    row = Row(
        *(f"r{position}", position, status, values.get("code"), None, values.get("confidence")),
        *(values.get("suggestions"), values.get("error"), occp, "", None, "anzsco", "model-1"),
        *(values.get("operation", "op-1"), 1, "abs", None, None, None, "batch", None),
    )
    return (*row, "dag", "run", "2026-01-01 00:00:00")


def test_the_cache_answers_in_batches_of_lookups() -> None:
    conn = _db()
    cache = ResultCache(conn, "out_cache", KEY)
    digests = [text_digest(f"job {i}", "") for i in range(LOOKUP_BATCH * 2 + 10)]
    conn.executemany(
        "INSERT INTO out_cache (service, topic, model_id, text_digest, code_status) VALUES (?, ?, ?, ?, 'successful')",
        [(*KEY.values, digest) for digest in digests[::3]],
    )
    conn.execute(
        "INSERT INTO out_cache (service, topic, model_id, text_digest, code_status) VALUES ('abs', 'anzsco', 'm2', ?, 'x')",
        (digests[1],),
    )
    assert cache.hits(digests) == set(digests[::3]), "only this key's outcomes"
    assert cache.queries == 3


def test_the_load_fills_duplicates_and_cache_rows_and_stores_only_real_outcomes() -> None:
    conn = _db()
    cursor = conn.cursor()
    cache = ResultCache(conn, "out_cache", KEY)
    cursor.execute(
        "INSERT INTO out_cache (service, topic, model_id, text_digest, code_status, code_category, code_confidence, "
        "occp_text, tasks_text, operation_id) VALUES (?, ?, ?, ?, 'successful', '253111', 0.95, 'gp', '', 'op-0')",
        (*KEY.values, text_digest("gp", "")),
    )
    primary = [
        _row(1, "successful", "nurse", code="254411", confidence=0.8),
        _row(2, "unsuccessful", "teacher", suggestions="[]"),
        _row(3, "error", "clerk", error="the service failed the line"),
    ]
    cursor.executemany(f"INSERT INTO out ({', '.join(TABLE_COLUMNS)}) VALUES ({', '.join('?' * 24)})", primary)
    sink = io.BytesIO()
    reuse = TextReuse(sink, dedupe=True, cache=cache, list_sent=True)
    reuse.select(
        (["r1", "r2", "r3", "r4", "r5"], ["nurse", "teacher", "clerk", "nurse", "gp"], [""] * 5, range(1, 6), {})
    )
    summary = RunSummary()
    filler = RunFill(conn, cursor, "out", "out_cache", KEY, "dag", "run", "2026-01-01 00:00:00")
    assert filler.run(read_reused(sink.getvalue().splitlines()), summary) == 2
    rows = {
        r[0]: r[1:]
        for r in cursor.execute("SELECT position, code_status, code_category, source, operation_id, record_id FROM out")
    }
    assert rows[4] == ("successful", "254411", "batch", "op-1", "r4"), "the duplicate shares the first row's outcome"
    assert rows[5] == ("successful", "253111", "cache", "op-0", "r5"), "the cache row keeps the first operation"
    stored = {r[0]: r[1] for r in cursor.execute("SELECT occp_text, operation_id FROM out_cache")}
    assert stored == {"gp": "op-0", "nurse": "op-1", "teacher": "op-1"}, "errors are never cached"
    assert summary.by_status == {"successful": 2}
    assert summary.confidence["0.9-1.0"] == 1 and summary.confidence["0.7-0.9"] == 1


def test_the_filled_rows_are_counted_as_counting_them_one_by_one_would() -> None:
    """Repeats (some with a repair note of their own) and cache rows of every status, bucket and code length:
    the aggregated counts of the fill equal :meth:`RunSummary.add` over the rows it inserted."""
    conn = _db()
    filled, aggregated, one_by_one = fill_a_mixed_run(conn, conn.cursor(), "?")
    assert filled == one_by_one.total == 51
    assert aggregated.to_dict() == one_by_one.to_dict()
    assert aggregated.sanitized > 0 and aggregated.by_status["error"] > 0 and aggregated.by_status["unsuccessful"] > 0


def fill_a_mixed_run(conn: Any, cursor: Any, mark: str) -> tuple[int, RunSummary, RunSummary]:
    """Fill a run of 56 records (5 sent, 3 texts in the cache, the rest repeats) in ``out`` (made by :func:`_db`
    or alike); return the rows filled, the fill's counts and the filled rows counted one by one."""
    cache = ResultCache(conn, "out_cache", KEY)
    insert = "INSERT INTO out_cache (service, topic, model_id, text_digest, code_status, code_category, "
    insert += f"code_confidence, occp_text, tasks_text, operation_id) VALUES ({', '.join([mark] * 8)}, '', 'op-0')"
    for occp, code, confidence in [("gp", "253111", 0.95), ("chef", "3513", 0.55), ("vet", None, None)]:
        status = "successful" if code else "unsuccessful"
        cursor.execute(insert, (*KEY.values, text_digest(occp, ""), status, code, confidence, occp))
    primary = [
        _row(1, "successful", "nurse", code="254411", confidence=0.8),
        _row(2, "successful", "cook", code="35", confidence=0.3),
        _row(3, "successful", "pilot", code="231111"),
        _row(4, "unsuccessful", "teacher", suggestions="[]"),
        _row(5, "error", "clerk", error="the service failed the line"),
    ]
    cursor.executemany(f"INSERT INTO out ({', '.join(TABLE_COLUMNS)}) VALUES ({', '.join([mark] * 24)})", primary)
    texts = ["nurse", "cook", "pilot", "teacher", "clerk", "gp", "chef", "vet"] * 7
    positions = range(1, len(texts) + 1)
    sink = io.BytesIO()
    notes = {index: "sanitized: folded whitespace" for index in range(0, len(texts), 3)}
    TextReuse(sink, dedupe=True, cache=cache, list_sent=True).select(
        ([f"r{p}" for p in positions], texts, [""] * len(texts), positions, notes)
    )
    aggregated = RunSummary()
    filler = RunFill(conn, cursor, "out", "out_cache", KEY, "dag", "run", "2026-01-01 00:00:00")
    filled = filler.run(read_reused(sink.getvalue().splitlines()), aggregated)
    one_by_one = RunSummary()
    cursor.execute(f"SELECT {', '.join(Row._fields)} FROM out WHERE position > 5")
    for values in cursor.fetchall():
        one_by_one.add(Row(*values))
    return filled, aggregated, one_by_one


def test_digests_are_remembered_while_texts_repeat_and_forgotten_when_they_do_not() -> None:
    repeating = TextReuse(io.BytesIO(), dedupe=True, cache=None, list_sent=False)
    distinct = TextReuse(io.BytesIO(), dedupe=True, cache=None, list_sent=False)
    batches = range(0, 2 * DIGEST_MEMO, 1000)
    for start in batches:
        positions = range(start + 1, start + 1001)
        repeating.choose((None, [f"job {p % 50}" for p in positions], [""] * 1000, positions, {}))
        distinct.choose((None, [f"job {p}" for p in positions], [""] * 1000, positions, {}))
    assert repeating._digest is not text_digest and distinct._digest is text_digest
    assert (repeating.counts.distinct, distinct.counts.distinct) == (50, 1000 * len(batches))
