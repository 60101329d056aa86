"""The pipeline's steps as the DAG runs them, one per child process (for timings and peak RSS).

``python -m bench.steps <step> '<json kwargs>'``; each prints ``{"seconds": ..., ...}``, the
seconds spent in the step itself (imports and connection lookups excluded where they can be).
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import FIELD_MAP, TOPIC, child_main, sleep_until

OUTPUT_TABLE = "coded_bench"


def extract(conn_id: str, sql: str, folder: str, chunk_records: int, columnar: bool = True) -> dict[str, Any]:
    """``extract_chunks``, as the ``extract`` task does: ADBC batches for SQLite and PostgreSQL
    (``columnar=False``: ``stream_query`` + ``write_chunks``, the DB-API path)."""
    from airflow_batchcode.manifests import ChunkOptions

    started = time.perf_counter()
    if columnar:
        from airflow_batchcode.columnar.extract import extract_chunks

        summary = extract_chunks(conn_id, sql, FIELD_MAP, folder, options=ChunkOptions(chunk_records))
    else:  # as the pipeline's default path: no pyarrow imported
        from airflow_batchcode.manifests import write_chunks
        from airflow_batchcode.warehouse import stream_query

        with stream_query(conn_id, sql) as (columns, rows):
            summary = write_chunks(rows, columns, FIELD_MAP, folder, options=ChunkOptions(chunk_records))
    return {"seconds": time.perf_counter() - started, "summary": summary.to_xcom()}


def upload(manifest: str, target: dict[str, str], start_at: float | None = None) -> dict[str, Any]:
    """``upload_manifest`` through the hook's client, as ``UploadManifestOperator`` does (from ``start_at``)."""
    from airflow_batchcode.hooks.batchcode import BatchCodeHook
    from airflow_batchcode.services.base import UploadTarget
    from airflow_batchcode.storage import open_for_reading

    client = BatchCodeHook("batchcode_default").client
    late = sleep_until(start_at) if start_at is not None else 0.0
    started, cpu = time.perf_counter(), time.process_time()
    with open_for_reading(manifest) as source:
        sent = client.upload_manifest(UploadTarget(**target), source)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"seconds": seconds, "cpu_seconds": cpu, "late_s": late, "bytes": sent}


def download(operation_id: str, destination: str, atomic: bool = True, start_at: float | None = None) -> dict[str, Any]:
    """Fresh URL from the status call, then ``download`` into the file (atomically, as the operator does),
    from ``start_at``."""
    from airflow_batchcode.hooks.batchcode import BatchCodeHook
    from airflow_batchcode.storage import write_atomically

    client: Any = BatchCodeHook("batchcode_default").client  # the ABS client: ``download`` is its own
    url = str(client.get_operation(operation_id, TOPIC).response_url)
    late = sleep_until(start_at) if start_at is not None else 0.0
    started, cpu = time.perf_counter(), time.process_time()
    if atomic:
        size = write_atomically(destination, lambda sink: client.download(url, sink))
    else:
        with open(destination, "wb") as sink:
            size = client.download(url, sink)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"seconds": seconds, "cpu_seconds": cpu, "late_s": late, "bytes": size}


def load(
    conn_id: str,
    chunks: list[dict[str, Any]],
    rejects: str,
    run_id: str,
    table: str = OUTPUT_TABLE,
    columnar: bool = True,
) -> dict[str, Any]:
    """The ``load`` task with ``columnar=True``: ``abs_chunk_batches`` + ``count_batch`` + ``ingest_run_batches``
    (``columnar=False``, its default path: ``chunk_rows`` + ``RunSummary.add`` + ``replace_run_rows``)."""
    from airflow_batchcode.results import rejected_rows
    from airflow_batchcode.rows import Stamp
    from airflow_batchcode.summary import RunSummary

    started = time.perf_counter()
    run = RunSummary(operations=len(chunks))

    def rejects_rows() -> Any:
        for row in rejected_rows(rejects, topic=TOPIC, model_id=None):
            run.add(row)
            yield row

    def where(chunk: dict[str, Any]) -> dict[str, Any]:
        stamp = Stamp(chunk["index"], chunk["operation_id"], TOPIC, chunk.get("model_id"))
        return {"manifest": chunk["manifest"], "stamp": stamp}

    if columnar:  # pyarrow imported only here, as the pipeline's default path does not
        from airflow_batchcode.columnar.load import ingest_run_batches, row_batches
        from airflow_batchcode.columnar.results import abs_chunk_batches, count_batch

        def batches() -> Any:
            for chunk in chunks:
                for batch in abs_chunk_batches(chunk["output"], chunk["positions"], **where(chunk)):
                    count_batch(run, batch)
                    yield batch
            yield from row_batches(rejects_rows())

        inserted = ingest_run_batches(conn_id, table, batches(), dag_id="bench", run_id=run_id)
    else:
        from airflow_batchcode.normalise.abs import chunk_rows
        from airflow_batchcode.warehouse import replace_run_rows

        def rows() -> Any:
            for chunk in chunks:
                for row in chunk_rows(chunk["output"], chunk["positions"], **where(chunk)):
                    run.add(row)
                    yield row
            yield from rejects_rows()

        inserted = replace_run_rows(conn_id, table, rows(), dag_id="bench", run_id=run_id)
    return {"seconds": time.perf_counter() - started, "rows": inserted, "summary": run.to_dict()}


if __name__ == "__main__":
    child_main({"extract": extract, "upload": upload, "download": download, "load": load})
