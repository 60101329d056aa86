"""The extract, by connection type: ADBC record batches where there is a driver, DB-API rows elsewhere.

Both paths write the same manifest chunks, positions and rejected records for the same rows;
:func:`extract_chunks` is what the pipeline's extract task calls.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from airflow_batchcode.chunks import ExtractSummary
from airflow_batchcode.columnar.adbc import stream_batches
from airflow_batchcode.columnar.manifests import write_batch_chunks
from airflow_batchcode.columnar.rules import ABS_LIMITS, InputLimits
from airflow_batchcode.dedupe import TextReuse
from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.manifests import DEFAULT_CHUNKS, ChunkOptions, FieldMap, write_chunks
from airflow_batchcode.warehouse import stream_query

log = logging.getLogger(__name__)
_SQLITE_MISMATCH = "[SQLite] Type mismatch"


def extract_chunks(
    conn_id: str,
    sql: str,
    field_map: FieldMap | Mapping[str, str],
    folder: str,
    *,
    options: ChunkOptions = DEFAULT_CHUNKS,
    limits: InputLimits | None = ABS_LIMITS,
    rules: Any = None,
    columnar: bool = True,
    reuse: TextReuse | None = None,
) -> ExtractSummary:
    """Run ``sql`` on ``conn_id`` and write its records as manifest chunks under ``folder``.

    PostgreSQL and SQLite connections stream Arrow record batches through ADBC (unless
    ``columnar`` is false); the others stream rows through :func:`~airflow_batchcode.warehouse.stream_query`.
    ``rules`` are the service's input rules (default: ABS's) and ``limits`` their limits for the
    vectorised mask; without ``limits`` (``None``) the extract takes the DB-API path, whose rules
    need no limits. SQLite has no column types: the ADBC driver takes them from the first batch and stops at a
    value of another type further on; the extract then starts over on the DB-API path (the
    files are rewritten, the summary is the second run's). ``reuse`` chooses which valid records are
    sent (:mod:`airflow_batchcode.dedupe`); having listed records already, it cannot start over, so
    with it a SQLite type change is a :class:`~airflow_batchcode.exceptions.ConfigurationError`.
    """
    if columnar and limits is None:
        log.info("The service's input rules have no column form: extracting through the DB-API")
    if columnar and limits is not None:
        try:
            with stream_batches(conn_id, sql) as streamed:
                if streamed is not None:
                    log.info("Extracting through ADBC into Arrow record batches")
                    columns, batches = streamed
                    return write_batch_chunks(
                        batches, columns, field_map, folder, options=options, limits=limits, rules=rules, reuse=reuse
                    )
                log.info(
                    "Connection %r has no ADBC driver here (postgres and sqlite do): extracting through the DB-API",
                    conn_id,
                )
        except OSError as exc:  # ADBC's errors; SQLite's column types are only guessed from the first batch
            if _SQLITE_MISMATCH not in str(exc):
                raise
            if reuse is not None:  # it has listed this run's repeats already: starting over would list them twice
                raise ConfigurationError(
                    "A SQLite column of the extract changes type part way, so the columnar extract cannot go on, "
                    "and with dedupe or the result cache it cannot start over on the DB-API path: run this "
                    "pipeline with columnar=False (or cast the column in the query)"
                ) from exc
            log.warning("A SQLite column changes type mid-extract; extracting again through the DB-API path")
    with stream_query(conn_id, sql) as (columns, rows):
        if rules is None:
            return write_chunks(rows, columns, field_map, folder, options=options, reuse=reuse)
        return write_chunks(rows, columns, field_map, folder, options=options, rules=rules, reuse=reuse)
