"""The Gravity-AI on-demand jobs API: a CSV job posted as multipart, polled, and its output fetched by link.

Wire contract: Gravity-AI's job-api documentation (on-demand jobs).

Documented: the ``X-Api-Key`` header; the envelope ``{"data", "isError", "errorMessage"}`` of every
answer (a 200 with ``isError: true`` is a failure); ``POST /api/v1/jobs`` as ``multipart/form-data``
with a JSON ``data`` part (``mimeType`` required; ``version``, ``name``, ``mapping``,
``outputMapping`` optional) and a ``file`` part; ``GET /api/v1/jobs/{id}``, ``GET /api/v1/jobs/latest``,
``PUT /api/v1/jobs/{id}`` (rename), ``GET /api/v1/jobs/result-link/{id}`` (a presigned GET URL of the
output, CSV for CSV input); the job object's fields; ``billedUsage`` in units of $0.001.

Assumed, where the documentation is silent:

- **Status.** Read case-insensitively: ``incomplete`` (and ``pending``, ``processing``, ``queued``,
  ``running``) is in progress, ``success`` is complete, ``error`` and ``fail`` are failed, with
  ``errorMessage`` or else ``statusMessage`` as the reason. Any other value is off-contract.
- **Topic and model.** The hosted project is chosen by the API key, so ``topic`` is not sent;
  ``model`` (else the connection's ``version``) is the project version.
- **Input.** The canonical manifest becomes CSV (``line,record_id,occp_text,tasks_text``), sent with
  ``mimeType: text/csv; header=present``. The default input ``mapping`` renames ``occp_text`` and
  ``tasks_text`` to the emulated model's features ``job_title`` and ``duties``; the connection's
  ``mapping`` / ``output_mapping`` extras replace it (a list of ``{source, destination, defaultValue}``
  or a ``{source: destination}`` object, also as JSON text).
- **Idempotency.** The job is named after the chunk (its stable digest name). Before posting, and
  after a POST whose answer was lost, ``/jobs/latest`` is searched for a job of that name that has
  not failed, and that job is re-attached instead of billing a second one. POSTs are never retried
  blindly. ``latest`` lists only the most recent jobs, so the search covers retries, not history.
- **Errors in the envelope** are typed by their message: "not found"/"no longer available" →
  :class:`NotFoundError`, API key problems → :class:`AuthenticationError`, "not complete" →
  :class:`ConflictError`, throttling → :class:`RateLimitedError`, anything else →
  :class:`InvalidRequestError`.
- **Output.** The result link is a secret (reported through ``on_secret``, never logged). A link
  refused with 403 (expired) is replaced by a fresh one once. The metadata written beside the output
  is ``{"job": <job object>, "request": <the data object>}``; the data object is rebuilt from the
  connection's settings, so the normaliser reads the output mapping that was used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_batchcode.services.lazy import exported_from

if TYPE_CHECKING:
    from airflow_batchcode.services.gravity.client import AsyncGravityClient, GravityClient
    from airflow_batchcode.services.gravity.envelope import (
        JOBS_PATH,
        PROGRESS_FIELDS,
        envelope_error,
        job_operation,
        job_path,
        parse_job,
        status_state,
        unwrap,
    )
    from airflow_batchcode.services.gravity.manifest import CSV_HEADER, CSV_MIME, manifest_to_csv, upload_filename
    from airflow_batchcode.services.gravity.settings import (
        DEFAULT_BASE_URL,
        DEFAULT_MAPPING,
        DEFAULT_RATE_LIMIT,
        SERVICE,
        ColumnMapping,
        GravitySettings,
        parse_mapping,
    )

__all__ = [
    "CSV_HEADER",
    "CSV_MIME",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAPPING",
    "DEFAULT_RATE_LIMIT",
    "JOBS_PATH",
    "PROGRESS_FIELDS",
    "SERVICE",
    "AsyncGravityClient",
    "ColumnMapping",
    "GravityClient",
    "GravitySettings",
    "envelope_error",
    "job_operation",
    "job_path",
    "manifest_to_csv",
    "parse_job",
    "parse_mapping",
    "status_state",
    "unwrap",
    "upload_filename",
]

__getattr__ = exported_from(__name__, __all__, ("client", "envelope", "manifest", "settings"))
