"""ASG Refinery batch jobs: a canonical manifest staged in object storage, a consensus label per record.

Wire contract: Refinery's "Batch jobs" documentation page. ``Authorization:
Bearer <api_key>``; errors are ``{"error": "..."}`` (401 bad key, 403 quota exhausted, 404 for
another customer's job). ``POST /v1/jobs`` takes the manifest URL, the label question and options,
the consensus threshold and the storage credentials, and answers 202 with a ``job_id``; ``GET
/v1/jobs/{id}`` reports ``accepted → processing → completed | failed`` with task counts; ``GET
/v1/jobs/{id}/export`` streams the settled task results as JSONL (409 until the job completes).

Decisions where the documentation is silent (the emulator follows them):

* Each canonical record becomes one manifest line whose ``data_url`` references the record's
  ``{"occp_text", "tasks_text"}`` JSON: by default its own object staged beside the manifest
  (``s3://``/``gs://``, or a presigned https URL), opt-in a percent-encoded ``data:`` URL
  (``record_urls``); ``metadata`` carries the 0-based manifest ``line`` and the ``record_id`` so
  results join back (exports come in any order).
* The labels are the classification's major groups, each option starting with its code
  (``"2 Professionals"``), so a consensus label maps back to a 1-digit code.
* With ``delivery`` the results are read from ``s3://<bucket>/<delivery_key>`` (by default
  ``refinery/<job_id>/results.jsonl``) through the connection's object store. A job object that
  carries ``delivery`` decides; otherwise the connection's ``delivery_bucket`` does.
* A failed job's reason is read from ``error`` (or ``message``) in the job object.
* No request rate limit is documented: the limiter is off unless ``rate_limit`` is set.

Connection extras read here: ``label_question`` (``{topic}`` is replaced by the classification's
name), ``label_options`` (a list, or a JSON list as text), ``consensus_threshold`` (2-10, default 3),
``task_type`` (default ``text_classification``), ``callback_url``, ``delivery_bucket``,
``delivery_key``, ``export_wait_attempts`` and ``export_wait_base`` (how long a download waits
for an export that answers 409), plus the shared HTTP settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_batchcode.services.lazy import exported_from

if TYPE_CHECKING:
    from airflow_batchcode.services.refinery.client import AsyncRefineryClient, RefineryClient
    from airflow_batchcode.services.refinery.settings import (
        DEFAULT_DELIVERY_KEY,
        DEFAULT_QUESTION,
        DEFAULT_TASK_TYPE,
        DEFAULT_THRESHOLD,
        MAJOR_GROUPS,
        POLL_CAP,
        POLL_SCHEDULE,
        SERVICE,
        TOPIC_NAMES,
        RefinerySettings,
        poll_delay,
    )
    from airflow_batchcode.services.refinery.wire import (
        DATA_URL_PREFIX,
        convert_manifest,
        data_url,
        job_path,
        parse_created,
        parse_job,
        translate_error,
    )

__all__ = [
    "DATA_URL_PREFIX",
    "DEFAULT_DELIVERY_KEY",
    "DEFAULT_QUESTION",
    "DEFAULT_TASK_TYPE",
    "DEFAULT_THRESHOLD",
    "MAJOR_GROUPS",
    "POLL_CAP",
    "POLL_SCHEDULE",
    "SERVICE",
    "TOPIC_NAMES",
    "AsyncRefineryClient",
    "RefineryClient",
    "RefinerySettings",
    "convert_manifest",
    "data_url",
    "job_path",
    "parse_created",
    "parse_job",
    "poll_delay",
    "translate_error",
]

# ``_translated`` is the name ``translate_error`` had while this package was one module.
__getattr__ = exported_from(
    __name__, __all__, ("client", "settings", "wire"), aliases={"_translated": "translate_error"}
)
