"""OpenLineage for the pipeline: extract and load report the source and the coded table, with schema and column lineage.

The OpenLineage provider (``apache-airflow-providers-openlineage``, optional) asks each
finished task's operator for ``get_openlineage_facets_on_complete(task_instance)``. The
pipeline's ``extract`` and ``load`` are ``@task`` functions, so :func:`attach` gives their
operators that method; without the provider it is never called, and nothing here is imported.

- **inputs**: the tables the (rendered) source query reads, parsed by ``openlineage_sql``;
  the query itself goes in the job's ``sql`` facet, so a query the parser cannot read is still reported;
- **output**: the coded table, with its schema (every column the loader writes) and column
  lineage: ``record_id``, ``occp_text`` and ``tasks_text`` come straight from their source
  columns, the codes, labels, confidences and suggestions are derived from both texts by the service.

Dataset namespaces follow OpenLineage's naming: ``postgres://host:port`` with
``database.schema.table`` names, ``sqlite://<file>`` with table names, ``<type>://host:port`` otherwise.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from airflow_batchcode.warehouse import TABLE_COLUMNS, column_type

if TYPE_CHECKING:
    from airflow_batchcode.dags import PipelineConfig

_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
"""Template expressions of a query not rendered yet: they stand for values, never for table names."""
_FROM = re.compile(r"\b(?:FROM|JOIN)\s+([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)", re.IGNORECASE)
"""The tables a query names after FROM or JOIN: the fallback when the SQL parser cannot read it."""
DERIVED = ("code_status", "code_category", "code_label", "code_confidence", "suggestions", "error")
COPIED = ("record_id", "occp_text", "tasks_text")
"""Column types as the loader creates them (the others are TEXT)."""


def attach(operator: Any, config: PipelineConfig) -> None:
    """Give ``operator`` (the pipeline's extract or load) ``get_openlineage_facets_on_complete``."""

    def facets_on_complete(task_instance: Any) -> Any:
        return lineage(config, _rendered_sql(task_instance, config))

    operator.get_openlineage_facets_on_complete = facets_on_complete


def _rendered_sql(task_instance: Any, config: PipelineConfig) -> str:
    """The source query as this run ran it (extract's rendered argument), else the configured one."""
    task = getattr(task_instance, "task", None)
    args = getattr(task, "op_args", None) or ()
    if task is not None and getattr(task, "task_id", "").endswith("extract") and args and isinstance(args[0], str):
        return args[0]
    return config.source_sql


def namespace_of(conn_id: str) -> tuple[str, str | None]:
    """(OpenLineage namespace, database name or ``None``) of an Airflow connection."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    kind = (conn.conn_type or "unknown").lower()
    if kind == "sqlite":
        return f"sqlite://{conn.host or conn.schema or ''}", None
    if kind in ("postgres", "postgresql"):
        return f"postgres://{conn.host or 'localhost'}:{conn.port or 5432}", conn.schema or None
    return f"{kind}://{conn.host or 'localhost'}{f':{conn.port}' if conn.port else ''}", conn.schema or None


def _qualified(table: str, database: str | None, default_schema: str | None) -> str:
    parts = table.split(".")
    if database is None:
        return table
    if len(parts) == 1 and default_schema:
        parts = [default_schema, *parts]
    return ".".join([database, *parts])


def source_tables(sql: str) -> list[str]:
    """The tables ``sql`` reads (``schema.table`` when it names a schema); empty when it cannot be parsed.

    Template expressions are replaced by a literal first; when ``openlineage_sql`` still cannot read
    the query, the names after ``FROM`` and ``JOIN`` are taken.
    """
    plain = _JINJA.sub("0", sql)
    try:
        from openlineage_sql import parse

        meta = parse([plain])
    except Exception:  # not installed, or a query it cannot read (e.g. both branches of a template's if)
        meta = None
    if meta is not None and meta.in_tables:
        return [".".join(p for p in (table.schema, table.name) if p) for table in meta.in_tables]
    return list(dict.fromkeys(_FROM.findall(plain)))


def lineage(config: PipelineConfig, sql: str) -> Any:
    """The ``OperatorLineage`` of the pipeline with source query ``sql``."""
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import Dataset
    from openlineage.client.facet_v2 import column_lineage_dataset as cl
    from openlineage.client.facet_v2 import schema_dataset, sql_job

    source_ns, source_db = namespace_of(config.source_conn_id)
    output_ns, output_db = namespace_of(config.output_conn_id)
    postgres = "public" if source_ns.startswith("postgres") else None
    mapped = {field: column for field, column in config.field_map.items() if field in COPIED}
    inputs = [
        Dataset(
            namespace=source_ns,
            name=_qualified(table, source_db, postgres),
            facets={
                "schema": schema_dataset.SchemaDatasetFacet(
                    fields=[schema_dataset.SchemaDatasetFacetFields(name=column) for column in mapped.values()]
                )
            },
        )
        for table in source_tables(sql)
    ]
    output_name = _qualified(config.output_table, output_db, "public" if output_ns.startswith("postgres") else None)

    def from_source(columns: list[str]) -> list[Any]:
        return [cl.InputField(namespace=d.namespace, name=d.name, field=c) for d in inputs for c in columns]

    texts = [mapped[f] for f in ("occp_text", "tasks_text") if f in mapped]
    fields = {
        field: cl.Fields(
            inputFields=from_source([column]), transformationType="IDENTITY", transformationDescription="copied"
        )
        for field, column in mapped.items()
    }
    for field in DERIVED:
        fields[field] = cl.Fields(
            inputFields=from_source(texts),
            transformationType="TRANSFORMATION",
            transformationDescription="coded by the batch coding service from the answer's texts",
        )
    output = Dataset(
        namespace=output_ns,
        name=output_name,
        facets={
            "schema": schema_dataset.SchemaDatasetFacet(
                fields=[schema_dataset.SchemaDatasetFacetFields(name=c, type=column_type(c)) for c in TABLE_COLUMNS]
            ),
            "columnLineage": cl.ColumnLineageDatasetFacet(fields=fields),
        },
    )
    return OperatorLineage(inputs=inputs, outputs=[output], job_facets={"sql": sql_job.SQLJobFacet(query=sql)})
