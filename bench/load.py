"""Figure 2: results → output table, against raw baselines (figure 1 is :mod:`bench.throughput`).

Each child alternates baseline and ours on the same data, several times, and keeps the best
time of each. Baselines: ``msgspec`` typed decoding of the output lines into the same rows, then
``executemany`` in one transaction or ADBC ingest, the faster (SQLite), or binary
``COPY FROM STDIN`` (PostgreSQL) into the same table.
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

from bench.common import TOPIC, Report, Settings, best, child, child_main, pg_dsn
from bench.throughput import TABLE, dbapi_context, ratio_figures


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
                    "batch",  # source, then recode_of
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
                *(TOPIC, None, None, None, None, None, None, None, None, None, "bench", run_id, loaded),
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


def _arrow_types() -> list[Any]:
    """The Arrow type of each output column (as the table's DDL types them)."""
    import pyarrow as pa

    numeric = {"position": pa.int64(), "code_confidence": pa.float64(), "agreement": pa.float64(), "chunk": pa.int64()}
    return [numeric.get(name, pa.large_string()) for name in _columns()]


def _sqlite_adbc_baseline_load(db: str, chunks: list[dict[str, Any]], rejects: str) -> tuple[float, int]:
    """The same rows as Arrow record batches, ADBC-ingested into the same table in one transaction."""
    import itertools

    import adbc_driver_sqlite.dbapi
    import pyarrow as pa

    columns, types = _columns(), _arrow_types()
    schema = pa.schema([pa.field(name, kind) for name, kind in zip(columns, types, strict=True)])
    started = time.perf_counter()
    count = 0

    def batches() -> Any:
        nonlocal count
        source = _baseline_rows(chunks, rejects, "baseline")
        while batch := list(itertools.islice(source, 50_000)):
            count += len(batch)
            values = list(zip(*batch, strict=True))
            values[-1] = tuple(value.isoformat(" ") for value in values[-1])  # as sqlite3 stores datetimes
            yield pa.RecordBatch.from_arrays(
                [pa.array(column, kind) for column, kind in zip(values, types, strict=True)], schema=schema
            )

    with contextlib.closing(adbc_driver_sqlite.dbapi.connect(f"file:{db}")) as conn:
        cursor = conn.cursor()
        for statement in _ddl(TABLE):
            cursor.execute(statement)
        cursor.adbc_ingest(TABLE, pa.RecordBatchReader.from_batches(schema, batches()), mode="append")
        conn.commit()
    return time.perf_counter() - started, count


def _pg_baseline_load(dsn: str, chunks: list[dict[str, Any]], rejects: str) -> tuple[float, int]:
    """Binary ``COPY FROM STDIN`` of the same rows (psycopg 3, types set once)."""
    import psycopg

    columns = _columns()
    kinds = {"position": "bigint", "code_confidence": "float8", "agreement": "float8", "chunk": "integer"}
    types = [kinds.get(name, "timestamp" if name == "loaded_at" else "text") for name in columns]
    started = time.perf_counter()
    count = 0
    with psycopg.connect(dsn) as conn, conn.cursor() as cursor:
        for statement in _ddl(TABLE):
            cursor.execute(statement)
        with cursor.copy(f"COPY {TABLE} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
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
        conn.execute(f"DROP TABLE IF EXISTS {TABLE} CASCADE")  # with the ``_latest`` view the load creates
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
    """Ours against ``executemany`` and ADBC ingest (taking turns as the baseline); the faster one's best counts."""
    import itertools

    from bench.steps import load

    turns = itertools.cycle([("executemany", _sqlite_baseline_load), ("ADBC ingest", _sqlite_adbc_baseline_load)])
    named: dict[str, list[float]] = {"executemany": [], "ADBC ingest": []}

    def baseline() -> tuple[float, int]:
        name, run = next(turns)
        seconds, count = run(db, chunks, rejects)
        named[name].append(seconds)
        return seconds, count

    times, rows, summary = _alternate(
        max(reps, 2),
        baseline,
        lambda: load("bench_sqlite_out", chunks, rejects, "ours", TABLE),
        lambda: _drop_sqlite(db),
    )
    faster = min((name for name in named if named[name]), key=lambda name: best(named[name]))
    times["baseline"] = named[faster]
    times["dbapi"] = [load("bench_sqlite_out", chunks, rejects, "ours", TABLE, columnar=False)["seconds"]]
    _drop_sqlite(db)
    return {"times": times, "rows": rows, "summary": summary, "baseline": faster}


def load_pg(dsn: str, chunks: list[dict[str, Any]], rejects: str, reps: int) -> dict[str, Any]:
    from bench.steps import load

    times, rows, summary = _alternate(
        reps,
        lambda: _pg_baseline_load(dsn, chunks, rejects),
        lambda: load("bench_pg", chunks, rejects, "ours", TABLE),
        lambda: _drop_pg(dsn),
    )
    times["dbapi"] = [load("bench_pg", chunks, rejects, "ours", TABLE, columnar=False)["seconds"]]
    _drop_pg(dsn)
    return {"times": times, "rows": rows, "summary": summary}


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
                "manifest": chunk["manifest"],
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
        "load",
        "load_sqlite",
        {"db": str(output_db), "chunks": chunks, "rejects": rejects, "reps": settings.load_reps},
        env=env,
        log=log,
    ).result
    _check_rows(result["rows"], records)
    ratio_figures(report, "load_sqlite", result["times"], records, f"msgspec + {result['baseline']}", 1.3)
    dbapi_context(
        report,
        "load_sqlite",
        result["times"],
        records,
        "the default path (rows in Python, replace_run_rows)",
        "the Arrow path",
    )
    if pg is not None:
        pg_result = child(
            "load",
            "load_pg",
            {"dsn": pg_dsn(pg), "chunks": chunks, "rejects": rejects, "reps": settings.load_reps},
            env=env,
            log=log,
        ).result
        _check_rows(pg_result["rows"], records)
        ratio_figures(report, "load_pg", pg_result["times"], records, "msgspec + binary COPY FROM STDIN", 1.3)
        dbapi_context(
            report,
            "load_pg",
            pg_result["times"],
            records,
            "the default path (rows in Python, replace_run_rows)",
            "the Arrow path",
        )


def _check_rows(rows: dict[str, int], records: int) -> None:
    if rows.get("ours") != records:
        raise RuntimeError(f"ours loaded {rows.get('ours')} rows of {records}")


if __name__ == "__main__":
    child_main({"load_sqlite": load_sqlite, "load_pg": load_pg})
