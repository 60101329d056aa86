"""Figure 1: extract → manifest, against raw baselines (figure 2, the load, is :mod:`bench.load`).

Each child alternates baseline and ours on the same data, several times, and keeps the best
time of each (background load only ever adds time). Baselines:

* extract, SQLite: the faster of ``fetchmany(10_000)`` + ``msgspec`` encoding of each row to a JSONL
  file and ADBC into Arrow written as NDJSON by Polars (and, for context, the same loop with
  ``json.dumps``, and our DB-API path);
* extract, PostgreSQL: ``COPY (SELECT ...) TO STDOUT`` into a file (psycopg2's ``copy_expert``, the fastest
  Python client, or psycopg 3's ``copy`` when psycopg2 is missing);
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec

from bench.common import (
    EXTRACT_SQL,
    Figure,
    Report,
    Settings,
    best,
    child,
    child_main,
    fmt,
    pg_dsn,
)

FETCH = 10_000
TABLE = "coded_bench"


# --- extract -----------------------------------------------------------------------------------


def _ours_extract(conn_id: str, folder: str, chunk_records: int, columnar: bool = True) -> tuple[float, dict[str, Any]]:
    from bench.steps import extract

    result = extract(conn_id, EXTRACT_SQL, folder, chunk_records, columnar)
    return result["seconds"], result["summary"]


def _sqlite_adbc_ndjson(db: str, out: str) -> tuple[float, int]:
    """ADBC into Arrow record batches, each written as NDJSON by Polars."""
    import adbc_driver_sqlite.dbapi
    import polars

    started = time.perf_counter()
    count = 0
    with contextlib.closing(adbc_driver_sqlite.dbapi.connect(f"file:{db}")) as conn, open(out, "wb") as sink:
        cursor = conn.cursor()
        cursor.execute(EXTRACT_SQL)
        for batch in cursor.fetch_record_batch():
            frame = polars.from_arrow(batch)
            assert isinstance(frame, polars.DataFrame)
            frame.write_ndjson(sink)
            count += batch.num_rows
        cursor.close()
    return time.perf_counter() - started, count


def _sqlite_msgspec(db: str, out: str) -> tuple[float, int]:
    started = time.perf_counter()
    encode = msgspec.json.Encoder().encode
    count = 0
    with contextlib.closing(sqlite3.connect(db)) as conn, open(out, "wb", buffering=1 << 20) as sink:
        cursor = conn.execute(EXTRACT_SQL)
        write = sink.write
        while batch := cursor.fetchmany(FETCH):
            for row in batch:
                write(encode(row))
                write(b"\n")
            count += len(batch)
    return time.perf_counter() - started, count


def _sqlite_json(db: str, out: str) -> tuple[float, int]:
    started = time.perf_counter()
    count = 0
    with contextlib.closing(sqlite3.connect(db)) as conn, open(out, "w", buffering=1 << 20) as sink:
        cursor = conn.execute(EXTRACT_SQL)
        while batch := cursor.fetchmany(FETCH):
            for row in batch:
                sink.write(json.dumps(row) + "\n")
            count += len(batch)
    return time.perf_counter() - started, count


def _pg_copy(dsn: str, out: str) -> tuple[float, str]:
    statement = f"COPY ({EXTRACT_SQL}) TO STDOUT"
    try:
        import psycopg2
    except ImportError:
        psycopg2 = None
    started = time.perf_counter()
    if psycopg2 is not None:
        conn = psycopg2.connect(dsn)
        with open(out, "wb", buffering=1 << 20) as sink:
            conn.cursor().copy_expert(statement, sink, size=1 << 20)
        conn.close()
        return time.perf_counter() - started, "psycopg2 copy_expert"
    import psycopg

    with (
        psycopg.connect(dsn) as conn3,
        open(out, "wb", buffering=1 << 20) as sink,
        conn3.cursor() as cursor,
        cursor.copy(statement) as copy,
    ):
        for block in copy:
            sink.write(block)
    return time.perf_counter() - started, "psycopg copy"


def extract_sqlite(db: str, work: str, reps: int, chunk_records: int) -> dict[str, Any]:
    """Baseline and ours, alternating, on the SQLite warehouse."""
    base_out, json_out, folder = f"{work}/base.jsonl", f"{work}/json.jsonl", f"{work}/ours"
    _sqlite_msgspec(db, base_out)  # warm the page cache
    times: dict[str, list[float]] = {"msgspec": [], "adbc": [], "ours": [], "json_dumps": [], "dbapi": []}
    summary: dict[str, Any] = {}
    rows = 0
    for rep in range(reps):
        order = ("msgspec", "adbc", "ours") if rep % 2 == 0 else ("ours", "adbc", "msgspec")
        for which in order:
            if which == "msgspec":
                seconds, rows = _sqlite_msgspec(db, base_out)
            elif which == "adbc":
                seconds, _ = _sqlite_adbc_ndjson(db, base_out)
            else:
                seconds, summary = _ours_extract("bench_sqlite", folder, chunk_records)
            times[which].append(seconds)
    times["json_dumps"].append(_sqlite_json(db, json_out)[0])
    times["dbapi"].append(_ours_extract("bench_sqlite", folder + "-dbapi", chunk_records, columnar=False)[0])
    faster = min(("msgspec", "adbc"), key=lambda name: best(times[name]))
    times["baseline"] = times[faster]
    baseline = "msgspec fetchmany" if faster == "msgspec" else "ADBC + Polars NDJSON"
    for path in (base_out, json_out):
        Path(path).unlink(missing_ok=True)
    return {"times": times, "rows": rows, "summary": summary, "baseline": baseline}


def extract_pg(dsn: str, work: str, reps: int, chunk_records: int) -> dict[str, Any]:
    """Baseline (COPY TO STDOUT) and ours, alternating, on the PostgreSQL warehouse."""
    base_out, folder = f"{work}/pg-copy.txt", f"{work}/ours-pg"
    _, how = _pg_copy(dsn, base_out)
    times: dict[str, list[float]] = {"baseline": [], "ours": [], "dbapi": []}
    summary: dict[str, Any] = {}
    for rep in range(reps):
        order = ("baseline", "ours") if rep % 2 == 0 else ("ours", "baseline")
        for which in order:
            if which == "baseline":
                seconds, how = _pg_copy(dsn, base_out)
            else:
                seconds, summary = _ours_extract("bench_pg", folder, chunk_records)
            times[which].append(seconds)
    times["dbapi"].append(_ours_extract("bench_pg", folder + "-dbapi", chunk_records, columnar=False)[0])
    Path(base_out).unlink(missing_ok=True)
    return {"times": times, "summary": summary, "baseline": how}


# --- the parent's side ----------------------------------------------------------------------------


def ratio_figures(
    report: Report, prefix: str, times: dict[str, list[float]], records: int, baseline: str, goal: float
) -> None:
    ours, base = best(times["ours"]), best(times["baseline"])
    report.add(
        Figure(
            f"{prefix}_records_per_s",
            records / ours / 1e6,
            "Mrec/s",
            f"{baseline} {fmt(records / base / 1e6)} Mrec/s",
            details={"ours_s": times["ours"], "baseline_s": times["baseline"]},
        )
    )
    ratio = ours / base
    report.add(
        Figure(
            f"{prefix}_ratio",
            ratio,
            "x",
            f"{baseline} {fmt(base)} s vs ours {fmt(ours)} s",
            goal=f"<= {goal}",
            met=ratio <= goal,
        )
    )


def dbapi_context(
    report: Report,
    prefix: str,
    times: dict[str, list[float]],
    records: int,
    path: str = "the DB-API path",
    ours_name: str = "the ADBC path",
) -> None:
    """Context only: the task's default path on the same data, once (extract: ``stream_query`` + ``write_chunks``)."""
    dbapi, ours = best(times["dbapi"]), best(times["ours"])
    report.add(
        Figure(
            f"{prefix}_dbapi_path",
            records / dbapi / 1e6,
            "Mrec/s",
            f"context only: {path}, {fmt(dbapi)} s ({fmt(dbapi / ours)}x of {ours_name}'s {fmt(ours)} s)",
        )
    )


def figure_extract(
    report: Report, settings: Settings, work: Path, env: dict[str, str], log: Path, pg: str | None
) -> dict[str, Any]:
    """Figure 1; returns the SQLite extract's summary (its chunks feed figure 2)."""
    out = work / "extract"
    out.mkdir(exist_ok=True)
    result = child(
        "throughput",
        "extract_sqlite",
        {"db": str(work / "warehouse.db"), "work": str(out), "reps": settings.reps, "chunk_records": 250_000},
        env=env,
        log=log,
    ).result
    rows = result["rows"]
    ratio_figures(
        report,
        "extract_sqlite",
        result["times"],
        rows,
        f"the faster of msgspec fetchmany and ADBC + Polars NDJSON: {result['baseline']}",
        1.3,
    )
    dbapi_context(report, "extract_sqlite", result["times"], rows)
    report.add(
        Figure(
            "extract_sqlite_json_dumps",
            rows / best(result["times"]["json_dumps"]) / 1e6,
            "Mrec/s",
            "context only: the same loop with json.dumps",
        )
    )
    if pg is not None:
        pg_result = child(
            "throughput",
            "extract_pg",
            {"dsn": pg_dsn(pg), "work": str(out), "reps": settings.reps, "chunk_records": 250_000},
            env=env,
            log=log,
        ).result
        ratio_figures(report, "extract_pg", pg_result["times"], rows, f"COPY TO STDOUT ({pg_result['baseline']})", 1.3)
        dbapi_context(report, "extract_pg", pg_result["times"], rows)
    summary: dict[str, Any] = result["summary"]
    return summary


def extract_only(work: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    """The SQLite extract alone (when figure 1 is not run): its chunks feed figure 2."""
    folder = work / "extract" / "ours"
    kwargs = {"conn_id": "bench_sqlite", "sql": EXTRACT_SQL, "folder": str(folder), "chunk_records": 250_000}
    summary: dict[str, Any] = child("steps", "extract", kwargs, env=env, log=log).result["summary"]
    return summary


if __name__ == "__main__":
    child_main({"extract_sqlite": extract_sqlite, "extract_pg": extract_pg})
