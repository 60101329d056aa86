"""The reusable pipeline: warehouse extract → one remote operation per chunk → coded output table.

``coding_dag(...)`` builds a whole DAG; ``coding_task_group(...)`` builds the same pipeline
as a TaskGroup inside a DAG of yours. Both take the same :class:`PipelineConfig` fields::

    extract ──► chunks ──► code_chunk[i] (create → upload → wait (deferred) → download), mapped per chunk
            ──► load (replaces this run's rows) ──► summary (quality gate)
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Asset, TaskGroup, conf, get_current_context, task, task_group

from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.manifests import DEFAULT_MAX_CHUNK_BYTES, FieldMap, stream_query, write_chunks
from airflow_batchcode.operators.batchcode import (
    METADATA_FILE,
    OPERATION_FILE,
    CreateOperationOperator,
    DownloadResultsOperator,
    UploadManifestOperator,
)
from airflow_batchcode.results import (
    Row,
    RunSummary,
    chunk_rows,
    chunk_usage,
    describe,
    quality_gate,
    rejected_rows,
    service_chunk_rows,
)
from airflow_batchcode.sensors.batchcode import OperationStatusSensor
from airflow_batchcode.storage import as_storage_path
from airflow_batchcode.warehouse import check_table_name, replace_run_rows


@dataclass(frozen=True)
class PipelineConfig:
    """Everything the pipeline needs; templated fields are marked.

    :param source_conn_id: common-sql connection to extract from.
    :param source_sql: the extract query (templated: ``{{ data_interval_start }}`` selects a backfill's slice).
    :param field_map: result columns → record fields (``occp_text``, ``tasks_text``, optional ``record_id``).
    :param output_conn_id: common-sql connection holding the output table.
    :param output_table: ``table`` or ``schema.table``; created when missing.
    :param batchcode_conn_id: the ``batchcode`` connection.
    :param topic: topic to code against (templated).
    :param model: model id, or the service's latest when ``None`` (templated).
    :param chunk_records: records per remote operation.
    :param poll_interval: seconds between status calls while waiting.
    :param staging: folder (path or URI) for manifests and raw results; default ``[batchcode] staging``
        or ``$AIRFLOW_HOME/batchcode``.
    :param sanitize: repair records the service would reject instead of reporting them as errors.
    :param min_success_rate: fail the run (after writing outputs) below this share of coded records.
    :param wait_timeout: how long to wait for one operation before giving up.
    :param max_chunk_bytes: size limit of one manifest (default just under the service's 5 GB).
    """

    source_conn_id: str
    source_sql: str
    field_map: dict[str, str]
    output_conn_id: str
    output_table: str
    batchcode_conn_id: str = "batchcode_default"
    topic: str = "anzsco"
    model: str | None = None
    chunk_records: int = 100_000
    poll_interval: float = 60.0
    staging: str | None = None
    sanitize: bool = False
    min_success_rate: float | None = None
    wait_timeout: timedelta = field(default=timedelta(days=2))
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES

    def __post_init__(self) -> None:
        FieldMap.parse(self.field_map)
        check_table_name(self.output_table)
        if self.min_success_rate is not None and not 0 <= self.min_success_rate <= 1:
            raise ConfigurationError(f"min_success_rate must be between 0 and 1, got {self.min_success_rate}")

    @property
    def asset(self) -> Asset:
        """The output table as an Airflow Asset, so downstream DAGs can be scheduled on it."""
        return Asset(
            name=f"batchcode_output__{self.output_conn_id}__{self.output_table}",
            uri=f"batchcode-output://{self.output_conn_id}/{self.output_table}",
        )


def staging_root(configured: str | None) -> str:
    """Where manifests and raw results live: the argument, ``[batchcode] staging``, or ``$AIRFLOW_HOME/batchcode``."""
    if configured:
        return configured.rstrip("/")
    default = f"{conf.get('core', 'airflow_home', fallback='.')}/batchcode"
    return str(conf.get("batchcode", "staging", fallback=default)).rstrip("/")


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", part)


def _build(config: PipelineConfig) -> None:
    """Add the pipeline's tasks to the DAG or TaskGroup being defined."""

    @task(task_id="extract")
    def extract(source_sql: str) -> dict[str, Any]:
        context = get_current_context()
        folder = f"{staging_root(config.staging)}/{_safe(context['dag'].dag_id)}/{_safe(context['run_id'])}"
        with stream_query(config.source_conn_id, source_sql) as (columns, rows):
            summary = write_chunks(
                rows,
                columns,
                config.field_map,
                folder,
                chunk_records=config.chunk_records,
                max_chunk_bytes=config.max_chunk_bytes,
                sanitize_records=config.sanitize,
            )
        print(
            f"Extracted {summary.rows} records into {len(summary.chunks)} chunk(s) under {folder}: "
            f"{summary.sent} to code, {summary.rejected} rejected before upload, {summary.sanitized} sanitized"
        )
        return summary.to_xcom()

    @task(task_id="chunks")
    def chunk_arguments(summary: dict[str, Any]) -> list[dict[str, str]]:
        """One ``code_chunk`` mapping per chunk (Airflow cannot map over a key of a dict)."""
        return [{"manifest": c["manifest"], "results": c["results"], "digest": c["digest"]} for c in summary["chunks"]]

    @task_group(group_id="code_chunk")
    def code_chunk(manifest: str, results: str, digest: str) -> None:
        create = CreateOperationOperator(
            task_id="create",
            batchcode_conn_id=config.batchcode_conn_id,
            topic=config.topic,
            model=config.model,
            input_digest=digest,
            manifest=manifest,
        )
        upload = UploadManifestOperator(
            task_id="upload", batchcode_conn_id=config.batchcode_conn_id, operation=create.output, manifest=manifest
        )
        wait = OperationStatusSensor(
            task_id="wait",
            batchcode_conn_id=config.batchcode_conn_id,
            operation=create.output,
            poll_interval=config.poll_interval,
            timeout=config.wait_timeout,
        )
        download = DownloadResultsOperator(
            task_id="download", batchcode_conn_id=config.batchcode_conn_id, operation=create.output, destination=results
        )
        create >> upload >> wait >> download

    @task(task_id="load", outlets=[config.asset], trigger_rule="none_failed")
    def load(summary: dict[str, Any], topic: str) -> dict[str, Any]:
        context = get_current_context()
        run = RunSummary(operations=len(summary["chunks"]))

        def rows() -> Any:
            for chunk in summary["chunks"]:
                yield from chunk_results(chunk, topic, run)
            for row in rejected_rows(summary["rejects"], topic=topic, model_id=None):
                run.add(row)
                yield row

        inserted = replace_run_rows(
            config.output_conn_id,
            config.output_table,
            rows(),
            dag_id=context["dag"].dag_id,
            run_id=context["run_id"],
        )
        if inserted != summary["rows"]:
            raise RuntimeError(f"Loaded {inserted} rows but extracted {summary['rows']}: refusing a partial load")
        result = run.to_dict()
        print(f"Loaded {inserted} rows into {config.output_table} for run {context['run_id']}")
        return result

    @task(task_id="summary")
    def report(result: dict[str, Any]) -> dict[str, Any]:
        print(describe(result))
        quality_gate(result, config.min_success_rate)
        return result

    extracted: Any = extract(config.source_sql)
    coded = code_chunk.expand_kwargs(chunk_arguments(extracted))
    loaded: Any = load(extracted, config.topic)
    coded >> loaded
    report(loaded)


def chunk_results(chunk: dict[str, Any], topic: str, run: RunSummary) -> Iterator[Row]:
    """The normalised rows of one downloaded chunk, whichever service coded it; counted into ``run``."""
    folder = as_storage_path(chunk["results"])
    operation = json.loads((folder / OPERATION_FILE).read_text())
    metadata = json.loads((folder / METADATA_FILE).read_text() or "{}")
    service = operation.get("service") or "abs"
    run.service = service
    topic = operation.get("topic") or topic
    if service == "abs":
        model_id = (metadata.get("model") or {}).get("modelId") or operation.get("model")
        rows = chunk_rows(
            str(folder / "output.jsonl"),
            chunk["positions"],
            chunk=chunk["index"],
            operation_id=operation["operation_id"],
            topic=topic,
            model_id=model_id,
        )
    else:
        run.add_usage(chunk_usage(service, metadata))
        rows = service_chunk_rows(
            service,
            str(folder / operation.get("output", "output.jsonl")),
            metadata,
            chunk["manifest"],
            chunk["positions"],
            lines=chunk["records"],
            chunk=chunk["index"],
            operation_id=operation["operation_id"],
            topic=topic,
            model_id=operation.get("model"),
        )
    for row in rows:
        run.add(row)
        yield row


def coding_task_group(group_id: str = "batchcode", **pipeline: Any) -> TaskGroup:
    """The pipeline as a TaskGroup, inside the DAG being defined; takes :class:`PipelineConfig`'s fields."""
    config = PipelineConfig(**pipeline)
    with TaskGroup(group_id=group_id) as group:
        _build(config)
    return group


def coding_dag(
    dag_id: str,
    *,
    source_conn_id: str,
    source_sql: str,
    field_map: dict[str, str],
    output_conn_id: str,
    output_table: str,
    batchcode_conn_id: str = "batchcode_default",
    topic: str = "anzsco",
    model: str | None = None,
    chunk_records: int = 100_000,
    poll_interval: float = 60,
    staging: str | None = None,
    sanitize: bool = False,
    min_success_rate: float | None = None,
    **dag_kwargs: Any,
) -> DAG:
    """A DAG running the whole pipeline; ``dag_kwargs`` go to ``DAG`` (schedule, start_date, params, ...).

    ``wait_timeout`` and ``max_chunk_bytes`` may be passed too and go to :class:`PipelineConfig`.
    """
    extra = {key: dag_kwargs.pop(key) for key in ("wait_timeout", "max_chunk_bytes") if key in dag_kwargs}
    config = PipelineConfig(
        source_conn_id=source_conn_id,
        source_sql=source_sql,
        field_map=dict(field_map),
        output_conn_id=output_conn_id,
        output_table=output_table,
        batchcode_conn_id=batchcode_conn_id,
        topic=topic,
        model=model,
        chunk_records=chunk_records,
        poll_interval=poll_interval,
        staging=staging,
        sanitize=sanitize,
        min_success_rate=min_success_rate,
        **extra,
    )
    dag_kwargs.setdefault("doc_md", __doc__)
    dag_kwargs.setdefault("tags", ["batchcode"])
    with DAG(dag_id, **dag_kwargs) as dag:
        _build(config)
    dag.fileloc = _dag_file()
    return dag


def _dag_file() -> str:
    """The user's DAG file that called the factory (not this package's module).

    Airflow records where a DAG was defined and workers re-parse that file to find it; a DAG
    built inside a library function would otherwise point at the library.
    """
    package = os.path.dirname(os.path.abspath(__file__))
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(package + os.sep):
            return filename
        frame = frame.f_back  # type: ignore[assignment]
    return os.path.abspath(__file__)


__all__ = ["PipelineConfig", "coding_dag", "coding_task_group"]
