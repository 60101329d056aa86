"""Figures 1 and 2: extract → manifest, and results → output table, against raw baselines.

Each child alternates baseline and ours on the same data, several times, and keeps the best
time of each (background load only ever adds time). Baselines:

* extract, SQLite: ``fetchmany(10_000)`` + ``msgspec`` encoding of each row to a JSONL file
  (and, for context, the same loop with ``json.dumps``);
* extract, PostgreSQL: ``COPY (SELECT ...) TO STDOUT`` into a file (psycopg2's ``copy_expert``, the fastest
  Python client, or psycopg 3's ``copy`` when psycopg2 is missing);
* load: ``msgspec`` typed decoding of the output lines into the same rows, then ``executemany`` in
  one transaction (SQLite) or ``COPY FROM STDIN`` (PostgreSQL) into the same table.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from bench.common import (
    EXTRACT_SQL,
    TOPIC,
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


def _ours_extract(conn_id: str, folder: str, chunk_records: int) -> tuple[float, dict[str, Any]]:
    from bench.steps import extract

    result = extract(conn_id, EXTRACT_SQL, folder, chunk_records)
    return result["seconds"], result["summary"]


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
    times: dict[str, list[float]] = {"baseline": [], "ours": [], "json_dumps": []}
    summary: dict[str, Any] = {}
    rows = 0
    for rep in range(reps):
        order = ("baseline", "ours") if rep % 2 == 0 else ("ours", "baseline")
        for which in order:
            if which == "baseline":
                seconds, rows = _sqlite_msgspec(db, base_out)
            else:
                seconds, summary = _ours_extract("bench_sqlite", folder, chunk_records)
            times[which].append(seconds)
    times["json_dumps"].append(_sqlite_json(db, json_out)[0])
    for path in (base_out, json_out):
        Path(path).unlink(missing_ok=True)
    return {"times": times, "rows": rows, "summary": summary}


def extract_pg(dsn: str, work: str, reps: int, chunk_records: int) -> dict[str, Any]:
    """Baseline (COPY TO STDOUT) and ours, alternating, on the PostgreSQL warehouse."""
    base_out, folder = f"{work}/pg-copy.txt", f"{work}/ours-pg"
    _, how = _pg_copy(dsn, base_out)
    times: dict[str, list[float]] = {"baseline": [], "ours": []}
    summary: dict[str, Any] = {}
    for rep in range(reps):
        order = ("baseline", "ours") if rep % 2 == 0 else ("ours", "baseline")
        for which in order:
            if which == "baseline":
                seconds, how = _pg_copy(dsn, base_out)
            else:
                seconds, summary = _ours_extract("bench_pg", folder, chunk_records)
            times[which].append(seconds)
    Path(base_out).unlink(missing_ok=True)
    return {"times": times, "summary": summary, "baseline": how}


# --- load --------------------------------------------------------------------------------------


class _Result(msgspec.Struct):
    codeCategory: Any = None
    codeLabel: Any = None
    codeConfidence: Any = None


class _Input(msgspec.Struct):
    occp_text: Any = None
    tasks_text: Any = None


class _Line(msgspec.Struct):
    recordId: Any = None
    codeStatus: Any = None
    input: _Input | None = None
    result: _Result | None = None
    suggestions: msgspec.Raw = msgspec.Raw()
    error: Any = None


class _Reject(msgspec.Struct):
    position: int
    error: str
    recordId: Any = None
    occp_text: Any = None
    tasks_text: Any = None
    note: Any = None


def _baseline_rows(chunks: list[dict[str, Any]], rejects: str, run_id: str) -> Any:
    """The same rows as ours, the fastest plain way: typed msgspec decoding, no checks."""
    decode = msgspec.json.Decoder(_Line).decode
    loaded = datetime.now(UTC).replace(tzinfo=None)
    for chunk in chunks:
        op, index, model = chunk["operation_id"], chunk["index"], chunk.get("model_id")
        with open(chunk["output"], "rb", buffering=1 << 20) as out, open(chunk["positions"], "rb") as pos:
            for line, where in zip(out, pos, strict=True):
                d = decode(line)
                position, _, note = where.rstrip(b"\n").partition(b"\t")
                r, i = d.result, d.input
                yield (
                    d.recordId,
                    int(position),
                    d.codeStatus if not d.error else "error",
                    r.codeCategory if r else None,
                    r.codeLabel if r else None,
                    r.codeConfidence if r else None,
                    bytes(d.suggestions).decode() if d.suggestions else None,
                    d.error,
                    i.occp_text if i else None,
                    i.tasks_text if i else None,
                    note.decode() or None,
                    TOPIC,
                    model,
                    op,
                    index,
                    "abs",  # service, then item_id, agreement, details (other services only)
                    None,
                    None,
                    None,
                    "bench",
                    run_id,
                    loaded,
                )
    decode_reject = msgspec.json.Decoder(_Reject).decode
    with open(rejects, "rb") as source:
        for line in source:
            j = decode_reject(line)
            yield (
                *(j.recordId, j.position, "error", None, None, None, None, j.error, j.occp_text, j.tasks_text, j.note),
                *(TOPIC, None, None, None, None, None, None, None, "bench", run_id, loaded),
            )


def _ddl(table: str) -> list[str]:
    from airflow_batchcode.warehouse import create_table_sql

    return create_table_sql(table)


def _columns() -> tuple[str, ...]:
    from airflow_batchcode.warehouse import TABLE_COLUMNS

    return TABLE_COLUMNS


def _sqlite_baseline_load(db: str, chunks: list[dict[str, Any]], rejects: str) -> tuple[float, int]:
    columns = _columns()
    insert = f"INSERT INTO {TABLE} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    started = time.perf_counter()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        for statement in _ddl(TABLE):
            conn.execute(statement)
        cursor = conn.cursor()
        cursor.executemany(insert, _baseline_rows(chunks, rejects, "baseline"))
        conn.commit()
        count = cursor.rowcount
    return time.perf_counter() - started, count


def _pg_baseline_load(dsn: str, chunks: list[dict[str, Any]], rejects: str) -> tuple[float, int]:
    import psycopg

    columns = _columns()
    started = time.perf_counter()
    count = 0
    with psycopg.connect(dsn) as conn, conn.cursor() as cursor:
        for statement in _ddl(TABLE):
            cursor.execute(statement)
        with cursor.copy(f"COPY {TABLE} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in _baseline_rows(chunks, rejects, "baseline"):
                copy.write_row(row)
                count += 1
    return time.perf_counter() - started, count


def _drop_sqlite(db: str) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(db + suffix).unlink(missing_ok=True)


def _drop_pg(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute("CHECKPOINT")


def _alternate(
    reps: int, baseline: Any, ours: Any, reset: Any
) -> tuple[dict[str, list[float]], dict[str, int], dict[str, Any]]:
    times: dict[str, list[float]] = {"baseline": [], "ours": []}
    rows: dict[str, int] = {}
    extra: dict[str, Any] = {}
    for rep in range(reps):
        order = ("baseline", "ours") if rep % 2 == 0 else ("ours", "baseline")
        for which in order:
            reset()
            if which == "baseline":
                seconds, rows["baseline"] = baseline()
            else:
                result = ours()
                seconds, rows["ours"] = result["seconds"], result["rows"]
                extra = result["summary"]
            times[which].append(seconds)
    reset()
    return times, rows, extra


def load_sqlite(db: str, chunks: list[dict[str, Any]], rejects: str, reps: int) -> dict[str, Any]:
    from bench.steps import load

    times, rows, summary = _alternate(
        reps,
        lambda: _sqlite_baseline_load(db, chunks, rejects),
        lambda: load("bench_sqlite_out", chunks, rejects, "ours", TABLE),
        lambda: _drop_sqlite(db),
    )
    return {"times": times, "rows": rows, "summary": summary}


def load_pg(dsn: str, chunks: list[dict[str, Any]], rejects: str, reps: int) -> dict[str, Any]:
    from bench.steps import load

    times, rows, summary = _alternate(
        reps,
        lambda: _pg_baseline_load(dsn, chunks, rejects),
        lambda: load("bench_pg", chunks, rejects, "ours", TABLE),
        lambda: _drop_pg(dsn),
    )
    return {"times": times, "rows": rows, "summary": summary}


# --- the parent's side ----------------------------------------------------------------------------


def _ratio_figures(
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
    _ratio_figures(report, "extract_sqlite", result["times"], rows, "msgspec fetchmany", 1.3)
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
        _ratio_figures(report, "extract_pg", pg_result["times"], rows, f"COPY TO STDOUT ({pg_result['baseline']})", 1.3)
    summary: dict[str, Any] = result["summary"]
    return summary


def extract_only(work: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    """The SQLite extract alone (when figure 1 is not run): its chunks feed figure 2."""
    folder = work / "extract" / "ours"
    kwargs = {"conn_id": "bench_sqlite", "sql": EXTRACT_SQL, "folder": str(folder), "chunk_records": 250_000}
    summary: dict[str, Any] = child("steps", "extract", kwargs, env=env, log=log).result["summary"]
    return summary


def code_outputs(summary: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The emulator's coding of each chunk (in process, no HTTP): the output files figure 2 loads."""
    import threading

    from airflow_batchcode.emulator.abs_app import code_file
    from airflow_batchcode.emulator.coding_model import load_models

    model = load_models()[TOPIC][-1]
    chunks = []
    for chunk in summary["chunks"]:
        folder = Path(chunk["results"])
        folder.mkdir(parents=True, exist_ok=True)
        code_file(Path(chunk["manifest"]), folder / "output.jsonl", model, threading.Event())
        chunks.append(
            {
                "output": str(folder / "output.jsonl"),
                "positions": chunk["positions"],
                "index": chunk["index"],
                "operation_id": f"bench-{chunk['index']}",
                "model_id": model.info.model_id,
            }
        )
    return chunks, summary["rejects"]


def figure_load(
    report: Report, settings: Settings, work: Path, env: dict[str, str], log: Path, pg: str | None, summary: dict
) -> None:
    """Figure 2."""
    chunks, rejects = code_outputs(summary)
    records = summary["rows"]
    output_db = work / "output.db"
    env = {**env, "AIRFLOW_CONN_BENCH_SQLITE_OUT": json.dumps({"conn_type": "sqlite", "host": str(output_db)})}
    result = child(
        "throughput",
        "load_sqlite",
        {"db": str(output_db), "chunks": chunks, "rejects": rejects, "reps": settings.load_reps},
        env=env,
        log=log,
    ).result
    _check_rows(result["rows"], records)
    _ratio_figures(report, "load_sqlite", result["times"], records, "msgspec + executemany", 1.3)
    if pg is not None:
        pg_result = child(
            "throughput",
            "load_pg",
            {"dsn": pg_dsn(pg), "chunks": chunks, "rejects": rejects, "reps": settings.load_reps},
            env=env,
            log=log,
        ).result
        _check_rows(pg_result["rows"], records)
        _ratio_figures(report, "load_pg", pg_result["times"], records, "msgspec + COPY FROM STDIN", 1.3)


def _check_rows(rows: dict[str, int], records: int) -> None:
    if rows.get("ours") != records:
        raise RuntimeError(f"ours loaded {rows.get('ours')} rows of {records}")


if __name__ == "__main__":
    child_main(
        {"extract_sqlite": extract_sqlite, "extract_pg": extract_pg, "load_sqlite": load_sqlite, "load_pg": load_pg}
    )
