"""super.ai job batches: one labelling job per manifest record, created in one call and read back job by job.

Wire contract: super.ai's API documentation, "The job batch object".

Documented by super.ai:

- base ``https://api.super.ai/v1``, header ``API-KEY: <key>``, error bodies carry a JSON ``message``;
- ``POST /apps/{app_uuid}/jobs`` ``{inputs | inputsFileUrl, callbackUrl?, metadata?, tags?}`` answers a
  ``batch_id``; ingestion is asynchronous (the status code only means "received");
- ``GET /apps/{app_uuid}/batches/{batch_id}``: the job batch object (``batch_processed``, ``batch_total``,
  ``valid_count``, ``total_processed``, ``invalid_index``, ``error_message``, ``errors_with_filename``, which the
  docs' own example spells ``errors_with_file``: both are read);
- ``GET /apps/{app_uuid}/jobs`` lists the app's jobs: ``page`` from 0, ``size`` up to 500, ``statusIn`` repeatable,
  ``sortBy``, ``orderBy``, ``createdStartDate``/``createdEndDate``/``completedStartDate``/``completedEndDate`` →
  ``{"jobs", "page", "size", "pages", "total"}``; a batch's jobs are the ones carrying its batch id, listed from
  the batch's ``created`` time on (``createdStartDate``);
- ``GET /jobs/{id}``, ``GET /jobs/{id}/response``, ``POST /jobs/{id}/cancel``; job states SCHEDULED, IN_PROGRESS,
  SUSPENDED (still live), FAILED, CANCELED, EXPIRED, COMPLETED (settled);
- inline inputs of at most 4 MB; in non-strict mode the valid inputs become jobs and the invalid ones are reported.

Assumed here, and kept by the emulator (``emulator/superai_app.py``):

- a listed job carries its batch as ``batchId`` (``batch_id`` is read too), its id as ``uuid`` (or ``id``), its
  failure as ``errorMessage`` (or ``error``), and its ``input`` (whose ``line`` the client set at create);
  ``metadata.batchcode_name`` and the tags the client sets at create name the run for a person looking;
- create answers ``{"batch_id": ...}`` (``batchId`` is read too); ``GET /jobs/{id}/response`` answers
  ``{"response": {...}}`` or the response object itself;
- ``batch_processed`` means ingestion is over (jobs may still run): the batch is complete once no job is SCHEDULED,
  IN_PROGRESS or SUSPENDED. A processed batch with no valid input at all has failed;
- the data program ("occupation coder") takes ``{line, record_id, job_title, duties, topic}`` per input and answers
  ``{"code", "label", "confidence"}``, or ``{"code": null, "suggestions": [{code, label, confidence}, ...]}``
  when it is not confident (super.ai responses are defined by each app);
- "4 MB" is read as 4,000,000 bytes of request body (the strictest reading);
- create is retried only when the service answered 429/5xx; with no answer at all the batch may exist, so the
  error says so instead of risking a second, billed batch (super.ai documents no idempotency key).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_batchcode.services.lazy import exported_from

if TYPE_CHECKING:
    from airflow_batchcode.services.superai.batches import (
        PENDING_STATES,
        SETTLED_STATES,
        Batch,
        JobsPage,
        batch_errors,
        batch_operation,
        output_line,
        parse_batch,
        parse_jobs_page,
        pending_count,
    )
    from airflow_batchcode.services.superai.client import AsyncSuperAiClient, SuperAiClient
    from airflow_batchcode.services.superai.create import MAX_INLINE_BYTES, parse_create, write_create_body
    from airflow_batchcode.services.superai.settings import (
        DEFAULT_BASE_URL,
        DEFAULT_RATE_LIMIT,
        DEFAULT_TAGS,
        MAX_PAGE_SIZE,
        SERVICE,
        SuperAiSettings,
    )

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_RATE_LIMIT",
    "DEFAULT_TAGS",
    "MAX_INLINE_BYTES",
    "MAX_PAGE_SIZE",
    "PENDING_STATES",
    "SERVICE",
    "SETTLED_STATES",
    "AsyncSuperAiClient",
    "Batch",
    "JobsPage",
    "SuperAiClient",
    "SuperAiSettings",
    "batch_errors",
    "batch_operation",
    "output_line",
    "parse_batch",
    "parse_create",
    "parse_jobs_page",
    "pending_count",
    "write_create_body",
]

__getattr__ = exported_from(__name__, __all__, ("batches", "client", "create", "settings"))
