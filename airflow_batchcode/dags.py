"""The reusable pipeline: warehouse extract → one remote operation per chunk → coded output table.

``coding_dag(...)`` builds a whole DAG; ``coding_task_group(...)`` builds the same pipeline
as a TaskGroup inside a DAG of yours. Both take the same :class:`PipelineConfig`, as
``config=PipelineConfig(...)`` or as its fields in keywords::

    extract ──► chunks ──► code_chunk[i] (create → upload → wait (deferred) → download), mapped per chunk
            ──► code_realtime (a small remainder, instead of operations)
            ──► load (replaces this run's rows) ──► summary (quality gate)

The extract sends each distinct text once (``dedupe``), skips texts the result cache answers
(``result_cache``), and hands a remainder of at most ``realtime_max_records`` records to the
service's real-time endpoint; the load fills the reused rows in the database
(:mod:`airflow_batchcode.dedupe`, :mod:`airflow_batchcode.result_cache`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Asset, TaskGroup, conf, get_current_context, task, task_group
from airflow.sdk.exceptions import AirflowSkipException

from airflow_batchcode.chunks import ExtractSummary
from airflow_batchcode.dedupe import TextReuse
from airflow_batchcode.exceptions import ConfigurationError, PartialLoadError
from airflow_batchcode.hooks.batchcode import BatchCodeHook
from airflow_batchcode.lineage import attach as attach_lineage
from airflow_batchcode.manifests import DEFAULT_MAX_CHUNK_BYTES, ChunkOptions, FieldMap, open_sink, write_chunks
from airflow_batchcode.operators.batchcode import (
    CreateOperationOperator,
    DownloadResultsOperator,
    UploadManifestOperator,
)
from airflow_batchcode.result_cache import CacheKey, ResultCache, RunFill
from airflow_batchcode.results import chunk_batches, chunk_results, columnar_load, rejected_rows
from airflow_batchcode.rows import Row
from airflow_batchcode.sensors.batchcode import OperationStatusSensor
from airflow_batchcode.services.catalogue import spec_for
from airflow_batchcode.staging import read_reused, reused_path
from airflow_batchcode.storage import airflow_home, open_staged
from airflow_batchcode.summary import RunSummary, describe, quality_gate
from airflow_batchcode.warehouse import check_table_name, replace_run_rows, stream_query


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
    :param model: model id, or the service's latest when ``None`` (templated); where the service lists
        its models (ABS), the extract refuses one the topic does not have.
    :param chunk_records: records per remote operation.
    :param poll_interval: seconds between status calls while waiting; default the service's advice
        (600 for ABS, 60 for the others).
    :param staging: folder (path or URI) for manifests and raw results; default ``[batchcode] staging``
        or ``$AIRFLOW_HOME/batchcode``.
    :param sanitize: repair records the service would reject instead of reporting them as errors.
    :param min_success_rate: fail the run (after writing outputs) below this share of coded records.
    :param wait_timeout: how long to wait for one operation before giving up.
    :param max_chunk_bytes: size limit of one manifest (default just under the service's 5 GB).
    :param columnar: extract PostgreSQL and SQLite sources through ADBC into Arrow record batches, with the
        input rules as a vectorised mask (:mod:`airflow_batchcode.columnar`); same files byte for byte.
        The load reads results straight into Arrow where the service's normaliser can (ABS) and writes
        a PostgreSQL or SQLite output in bulk (CSV ``COPY``; ADBC ingest); same rows. Off by default
        while its memory cost (peak RSS about 185 MB against 135 MB; importing pyarrow alone takes a
        task from 112 MB to 145 MB) is worked on. It de-duplicates, uses the result cache and re-codes
        as the default path does.
    :param dedupe: send records with identical texts once per run; every source row still gets its row.
    :param result_cache: reuse earlier runs' outcomes for the same service, topic, model and texts,
        kept in ``result_cache_table`` in the output connection (errors are never cached).
    :param result_cache_table: the cache table; default ``<output_table>_cache``.
    :param realtime_max_records: code a remainder of at most this many records through the service's
        real-time endpoint instead of a remote operation (services that have one; 0 disables).
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
    poll_interval: float | None = None
    staging: str | None = None
    sanitize: bool = False
    min_success_rate: float | None = None
    wait_timeout: timedelta = field(default=timedelta(days=2))
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES
    columnar: bool = False
    dedupe: bool = True
    result_cache: bool = False
    result_cache_table: str | None = None
    realtime_max_records: int = 300

    def __post_init__(self) -> None:
        FieldMap.parse(self.field_map)
        _ = self.chunk_options  # chunk limits out of range are refused as the DAG is parsed
        check_table_name(self.output_table)
        check_table_name(self.cache_table)
        if self.realtime_max_records < 0:
            raise ConfigurationError(f"realtime_max_records must be 0 or more, got {self.realtime_max_records}")
        if self.min_success_rate is not None and not 0 <= self.min_success_rate <= 1:
            raise ConfigurationError(f"min_success_rate must be between 0 and 1, got {self.min_success_rate}")

    @property
    def chunk_options(self) -> ChunkOptions:
        """How the extract cuts its records into chunks."""
        return ChunkOptions(self.chunk_records, self.max_chunk_bytes, self.sanitize)

    @property
    def cache_table(self) -> str:
        """The result cache's table in the output connection."""
        return self.result_cache_table or f"{self.output_table}_cache"

    @property
    def reuses(self) -> bool:
        """Whether the extract lists reused rows (de-duplication, the cache, or a re-code's ``recode_of``)."""
        return self.dedupe or self.result_cache or FieldMap.parse(self.field_map).recode_of is not None

    @property
    def asset(self) -> Asset:
        """The output table as an Airflow Asset, so downstream DAGs can be scheduled on it."""
        return Asset(
            name=f"batchcode_output__{self.output_conn_id}__{self.output_table}",
            uri=f"batchcode-output://{self.output_conn_id}/{self.output_table}",
        )


def staging_root(configured: str | None) -> str:
    """Where manifests and raw results live: the argument, ``[batchcode] staging``, or ``$AIRFLOW_HOME/batchcode``.

    ``$AIRFLOW_HOME`` is the home Airflow itself resolved (:func:`airflow_home`), never the
    process's current directory, which differs between a worker's tasks.
    """
    if configured:
        return configured.rstrip("/")
    configured = conf.get("batchcode", "staging", fallback=None)
    if configured:
        return str(configured).rstrip("/")
    return os.path.join(airflow_home(), "batchcode")


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", part)


def _build(config: PipelineConfig) -> None:
    """Add the pipeline's tasks to the DAG or TaskGroup being defined."""

    @task(task_id="extract")
    def extract(source_sql: str, topic: str, model: str | None) -> dict[str, Any]:
        context = get_current_context()
        folder = f"{staging_root(config.staging)}/{_safe(context['dag'].dag_id)}/{_safe(context['run_id'])}"
        hook = BatchCodeHook(config.batchcode_conn_id)
        spec = spec_for(hook.service)
        rules = spec.rules()
        # a named model is checked now; the latest is pinned now only where the cache needs its id
        model = hook.resolve_model(topic, model or None) if config.result_cache or model else None
        reuse: TextReuse | None = None
        with contextlib.ExitStack() as stack:
            if config.reuses:
                cache = None
                if config.result_cache:  # before the extract's read transaction: the cache DDL writes
                    conn = stack.enter_context(contextlib.closing(_connect(config.output_conn_id)))
                    cache = ResultCache(conn, config.cache_table, CacheKey(hook.service, topic, model))
                sink = stack.enter_context(open_sink(reused_path(folder)))
                reuse = TextReuse(sink, dedupe=config.dedupe, cache=cache, list_sent=config.result_cache)
            if config.columnar:
                from airflow_batchcode.columnar.extract import extract_chunks  # pyarrow: not at DAG parse time

                # a service whose own rules have no vectorised limits keeps the DB-API path
                summary = extract_chunks(
                    config.source_conn_id, source_sql, config.field_map, folder,
                    options=config.chunk_options, rules=rules, limits=spec.limits(), reuse=reuse,
                )  # fmt: skip
            else:
                columns, rows = stack.enter_context(stream_query(config.source_conn_id, source_sql))
                summary = write_chunks(
                    rows, columns, config.field_map, folder, options=config.chunk_options, rules=rules, reuse=reuse
                )
        if config.reuses:
            summary.reused = reused_path(folder)
        summary.model = model
        summary.realtime = bool(spec.realtime_batch) and 0 < summary.sent <= config.realtime_max_records
        print(
            f"Extracted {summary.rows} records into {len(summary.chunks)} chunk(s) under {folder}: "
            f"{summary.sent} to code{' in real time' if summary.realtime else ''}, "
            f"{summary.rejected} rejected before upload, {summary.sanitized} sanitized"
            + (
                f"; {summary.distinct} distinct texts, {summary.duplicates} repeats, {summary.cached} from the cache"
                if config.reuses
                else ""
            )
        )
        return summary.to_xcom()

    @task(task_id="chunks")
    def chunk_arguments(summary: dict[str, Any]) -> list[dict[str, str]]:
        """One ``code_chunk`` mapping per chunk (Airflow cannot map over a key of a dict); none for real time."""
        extracted = ExtractSummary.from_xcom(summary)
        if extracted.realtime:
            return []
        return [{**chunk.mapping(), "model": extracted.model or ""} for chunk in extracted.chunks]

    @task_group(group_id="code_chunk")
    def code_chunk(manifest: str, results: str, digest: str, model: str = "") -> None:
        create = CreateOperationOperator(
            task_id="create",
            batchcode_conn_id=config.batchcode_conn_id,
            topic=config.topic,
            model=model,
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

    @task(task_id="code_realtime")
    def code_realtime(summary: dict[str, Any], topic: str) -> list[dict[str, Any]]:
        """Code a small remainder through the service's real-time endpoint (skipped otherwise)."""
        extracted = ExtractSummary.from_xcom(summary)
        if not extracted.realtime:
            raise AirflowSkipException(
                f"{extracted.sent} records to code: more than realtime_max_records={config.realtime_max_records}, "
                "none, or a service without real-time coding"
            )
        hook = BatchCodeHook(config.batchcode_conn_id)
        # rows name the model that coded them, as in batch (a named one was checked by the extract)
        model = extracted.model or hook.resolve_model(topic, None)
        return [hook.code_realtime(chunk, topic, model).to_xcom() for chunk in extracted.chunks]

    @task(task_id="load", outlets=[config.asset], trigger_rule="none_failed")
    def load(summary: dict[str, Any], topic: str) -> dict[str, Any]:
        context = get_current_context()
        extracted = ExtractSummary.from_xcom(summary)
        run = RunSummary(operations=0 if extracted.realtime else len(extracted.chunks))
        service = BatchCodeHook(config.batchcode_conn_id).service
        dag_id, run_id = context["dag"].dag_id, context["run_id"]

        def rejects() -> Iterator[Row]:
            for row in rejected_rows(extracted.rejects, topic=topic, model_id=None):
                run.add(row)
                yield row

        def fill(conn: Any, cursor: Any, loaded_at: Any) -> int:
            cache_table = config.cache_table if config.result_cache else None
            filler = RunFill(
                conn, cursor, config.output_table, cache_table, CacheKey(service, topic, extracted.model),
                dag_id, run_id, loaded_at,
            )  # fmt: skip
            with open_staged(extracted.reused, "reused-rows file") as lines:
                return filler.run(read_reused(lines), run)

        after = fill if extracted.reused else None
        if config.columnar and columnar_load(service, config.output_conn_id):
            from airflow_batchcode.columnar.load import ingest_run_batches, row_batches  # pyarrow: not at parse time

            batches = itertools.chain.from_iterable(chunk_batches(chunk, topic, run) for chunk in extracted.chunks)
            inserted = ingest_run_batches(
                config.output_conn_id, config.output_table, itertools.chain(batches, row_batches(rejects())),
                dag_id=dag_id, run_id=run_id, after=after,
            )  # fmt: skip
        else:
            rows = itertools.chain.from_iterable(chunk_results(chunk, topic, run) for chunk in extracted.chunks)
            inserted = replace_run_rows(
                config.output_conn_id, config.output_table, itertools.chain(rows, rejects()),
                dag_id=dag_id, run_id=run_id, after=after,
            )  # fmt: skip
        if inserted != summary["rows"]:
            raise PartialLoadError(f"Loaded {inserted} rows but extracted {summary['rows']}: refusing a partial load")
        run.count_texts(
            records=extracted.rows,
            distinct=extracted.distinct if config.dedupe else extracted.sent + extracted.cached,
            duplicates=extracted.duplicates,
            cached=extracted.cached,
            sent=extracted.sent,
            realtime=extracted.realtime,
        )
        run.requests = BatchCodeHook(config.batchcode_conn_id).request_usage(run.operation_ids)
        result = run.to_dict()
        print(f"Loaded {inserted} rows into {config.output_table} for run {run_id}")
        return result

    @task(task_id="summary")
    def report(result: dict[str, Any]) -> dict[str, Any]:
        print(describe(result))
        quality_gate(result, config.min_success_rate)
        return result

    extracted: Any = extract(config.source_sql, config.topic, config.model)
    coded = code_chunk.expand_kwargs(chunk_arguments(extracted))
    realtime = code_realtime(extracted, config.topic)
    loaded: Any = load(extracted, config.topic)
    [coded, realtime] >> loaded
    for lineage_task in (extracted.operator, loaded.operator):
        attach_lineage(lineage_task, config)  # OpenLineage facets, used when its provider is installed
    report(loaded)


def _connect(conn_id: str) -> Any:
    """A DB-API connection of a common-sql Airflow connection."""
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id).get_hook().get_conn()


def _pipeline_config(config: PipelineConfig | None, fields: dict[str, Any]) -> PipelineConfig:
    """``config`` itself, or one built from ``fields``; a mix of both is refused, so no value is silently lost."""
    if config is None:
        return PipelineConfig(**fields)
    if not isinstance(config, PipelineConfig):
        raise ConfigurationError(f"config must be a PipelineConfig, got {type(config).__name__}")
    if fields:
        raise ConfigurationError(
            f"pass the pipeline's settings either as config=PipelineConfig(...) or as keywords, not both "
            f"(also given: {', '.join(sorted(fields))})"
        )
    return config


def coding_task_group(
    group_id: str = "batchcode", *, config: PipelineConfig | None = None, **pipeline: Any
) -> TaskGroup:
    """The pipeline as a TaskGroup, inside the DAG being defined.

    :param group_id: the TaskGroup's id.
    :param config: the pipeline's settings; or pass :class:`PipelineConfig`'s fields as keywords instead.
    :raises ConfigurationError: when both ``config`` and keyword fields are given.
    """
    config = _pipeline_config(config, pipeline)
    with TaskGroup(group_id=group_id) as group:
        _build(config)
    return group


_PIPELINE_FIELDS = frozenset(PipelineConfig.__dataclass_fields__)


def coding_dag(dag_id: str, *, config: PipelineConfig | None = None, **dag_kwargs: Any) -> DAG:
    """A DAG running the whole pipeline.

    ``coding_dag("id", config=PipelineConfig(...), schedule=...)`` and ``coding_dag("id", source_conn_id=...,
    ..., schedule=...)`` build the same DAG: keywords naming :class:`PipelineConfig` fields configure the
    pipeline, every other keyword goes to ``DAG`` (``schedule``, ``start_date``, ``params``, ...).

    :param dag_id: the DAG's id.
    :param config: the pipeline's settings, instead of its fields as keywords.
    :raises ConfigurationError: when both ``config`` and keyword fields are given.
    """
    fields = {key: dag_kwargs.pop(key) for key in _PIPELINE_FIELDS & dag_kwargs.keys()}
    if "field_map" in fields:
        fields["field_map"] = dict(fields["field_map"])
    config = _pipeline_config(config, fields)
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
