"""The columnar data path: extract, validate, read results and load on Apache Arrow, through ADBC drivers.

Where the warehouse connection is PostgreSQL or SQLite, the extract streams Arrow record
batches of bounded size (:mod:`.adbc`), the input rules find the records that need a closer
look a whole column at a time (:mod:`.rules`, the limits given as :class:`.rules.InputLimits`),
and manifest chunks are written from those columns in bulk (:mod:`.manifests`); every other
common-sql connection keeps the DB-API path (:mod:`airflow_batchcode.warehouse`). Both paths
write the same bytes: the row-at-a-time rules of :mod:`airflow_batchcode.records` still decide
every record that is not plainly fine, so reasons and repairs are theirs.

:mod:`.results` reads ABS output into Arrow record batches equal to the row path's rows, checked
against the manifest as the row path checks it; :mod:`.load` writes record batches to the output
table (CSV ``COPY`` on PostgreSQL, ADBC ingest and a staging table on SQLite) in the one
transaction that replaces the run's rows. With ``columnar=True`` the pipeline's extract and load
tasks take these paths; the load's Arrow memory comes from the C library's allocator
(:func:`.adbc.system_allocator`).
"""

from __future__ import annotations
