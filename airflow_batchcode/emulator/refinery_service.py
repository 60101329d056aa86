"""The ASG Refinery emulator's state: API keys and tenants, jobs, manifest reading, coding and delivery.

Documented (Refinery's "Batch jobs" page): Bearer API keys; ``{"error"}`` bodies; 401 for a
bad key, 403 for an exhausted quota, 404 for another customer's job; ``POST /v1/jobs`` → 202
``{job_id, status: "accepted", message}``; job states ``accepted → processing → completed | failed``;
bad manifest lines count in ``tasks_failed`` without failing the job; the export is JSONL of settled
task results, 409 ``{"error": "job is not completed yet"}`` before completion; credentials are never
returned; ``delivery {"type": "s3", "bucket"}`` writes the results into the customer's bucket.

Assumed (the documentation is silent):

* The quota is ``daily_quota`` API requests per tenant per UTC day (0 = none); no rate limit.
* Manifests are read from ``s3_endpoint_url`` (path-style) with the job's own credentials; a
  refused key, a missing object or an unreachable endpoint fails the job with the reason in
  ``error``. ``gs://`` manifests fail: "GCS not reachable from the emulator".
* ``data_url`` is read from the S3 endpoint: an ``s3://`` (or https S3) URL with the job's credentials, or
  a presigned URL of the endpoint; or it is a ``data:`` URL (percent-encoded or ``;base64``). The content
  is a JSON object with ``occp_text`` and ``tasks_text`` (``text/plain`` ``data:`` content is taken as the
  job title); any other URL cannot be fetched here and fails its task.
* Labels: the coding model (the classification named in the question, ANZSCO by default) picks the
  major group, and the label is the option whose leading digits are that group (options without
  codes are chosen by a hash). ``worker_count`` is the threshold, now and then one more;
  ``agreement_count`` falls below the threshold for uncertain records, which then get no
  consensus (``consensus_label`` null). ``confidence`` blends the agreement and the model's confidence.
* Export lines come in blocks shuffled per job, so clients must join by ``metadata``; failed tasks
  are exported too (``status: "failed"`` with ``error``). The export answers 409 for failed jobs,
  honours one ``Range``, keeps working for delivered jobs, and is gone (404) ``retention`` seconds
  after completion. Delivered results are ``s3://<bucket>/refinery/<job_id>/results.jsonl``.
* The job object adds ``error`` (failed jobs) and ``delivery`` (when requested) to the documented fields.
* ``callback_url`` is checked and kept, but never called (the emulator makes no outbound calls but S3).
"""

from __future__ import annotations

import hmac
import logging
import random
import shutil
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from airflow_batchcode.emulator.coding_model import load_models
from airflow_batchcode.emulator.common import EmulatedService
from airflow_batchcode.emulator.config import EmulatorConfig
from airflow_batchcode.emulator.contract import ApiError, iso_time
from airflow_batchcode.emulator.files import FileSink
from airflow_batchcode.emulator.refinery_coding import TaskCoder, decode_data_url, lines_of
from airflow_batchcode.emulator.refinery_jobs import (
    DELIVERY_KEY,
    Job,
    JobFailure,
    ManifestLocation,
    job_from_request,
    parse_manifest_url,
)

__all__ = [
    "DELIVERY_KEY",
    "Job",
    "JobFailure",
    "ManifestLocation",
    "RefineryService",
    "TaskCoder",
    "decode_data_url",
    "parse_manifest_url",
]

log = logging.getLogger(__name__)

MSG_BAD_KEY = "invalid API key"

MSG_QUOTA = "quota exhausted"

MSG_NOT_FOUND = "job not found"

MSG_NOT_COMPLETED = "job is not completed yet"

MSG_GCS = "GCS not reachable from the emulator"
MSG_UNFETCHABLE = "data_url could not be fetched: the emulator only reads data: URLs and objects on its S3 endpoint"
MAX_RECORD_BYTES = 1 << 20
"""Most of a record object the emulator reads."""

MSG_ACCEPTED = "Job accepted. Manifest will be processed asynchronously."

SHUFFLE_BLOCK = 64

_encode = msgspec.json.encode


class RefineryService(EmulatedService):
    """Everything the Refinery emulator remembers. Handlers run on the event loop; jobs are processed
    on a thread pool and touch shared state only under ``lock``.

    :param config: the emulator's settings.
    """

    name = "refinery"
    counter_names = ("jobs_created", "requests", "exports", "deliveries", "manifests_read", "throttled")

    def __init__(self, config: EmulatorConfig) -> None:
        super().__init__(config)
        self.models = load_models()
        self.data_dir = self._data_dir("refinery")
        self.jobs: dict[str, Job] = {}

    @property
    def pickup(self) -> float:
        """How long a new job shows ``accepted`` at least."""
        return min(1.0, self.config.processing_delay / 4)

    # -- auth --------------------------------------------------------------------------------

    def tenant(self, authorization: str | None) -> str:
        """The tenant of a ``Bearer`` API key (401 otherwise), after the daily quota (403)."""
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        tenant = None
        if scheme.lower() == "bearer" and key:
            for known, owner in self.config.api_keys.items():
                if hmac.compare_digest(known.encode(), key.encode()):
                    tenant = owner
        if tenant is None:
            raise ApiError(401, MSG_BAD_KEY)
        now = self.clock.now()
        self.count_call(tenant, now)
        self.spend_quota(tenant, now, ApiError(403, MSG_QUOTA))
        return tenant

    def job_of(self, tenant: str, job_id: str) -> Job:
        """One of ``tenant``'s jobs; another tenant's, or none, is a 404."""
        job = self.jobs.get(job_id)
        if job is None or job.tenant != tenant:
            raise ApiError(404, MSG_NOT_FOUND)
        return job

    # -- jobs --------------------------------------------------------------------------------

    def create_job(self, tenant: str, body: Any) -> dict[str, Any]:
        """Validate a ``POST /v1/jobs`` body, queue the job and return the 202 body."""
        job = job_from_request(tenant, body, self.clock.now())
        with self.lock:
            self.jobs[job.id] = job
        self.counters["jobs_created"][tenant] += 1
        self._pool.submit(self._process, job)
        return {"job_id": job.id, "status": "accepted", "message": MSG_ACCEPTED}

    def describe(self, job: Job) -> dict[str, Any]:
        """The documented job object (never the credentials)."""
        now = self.clock.now()
        state = job.state(now, self.pickup)
        done, failed = job.done, job.failed
        if state in ("accepted", "processing"):
            span = max(job.ready_at - job.created_at, 1e-9) if job.outcome else 0.0
            share = min(1.0, max(0.0, (now - job.created_at) / span)) if span else 0.0
            done, failed = int(done * share), int(failed * share)
        body: dict[str, Any] = {
            "job_id": job.id,
            "status": state,
            "total_tasks": job.total if state != "accepted" else 0,
            "tasks_done": done,
            "tasks_failed": failed,
            "progress_percent": round(100.0 * (done + failed) / job.total, 1) if job.total else 0.0,
            "created_at": iso_time(job.created_at),
            "completed_at": iso_time(job.ready_at) if state in ("completed", "failed") else None,
        }
        if state == "failed":
            body["error"] = job.error
        if job.delivery_bucket:
            body["delivery"] = {"type": "s3", "bucket": job.delivery_bucket}
        return body

    def export_path(self, job: Job) -> Path:
        """A completed job's export file, or the documented 409 / 404."""
        now = self.clock.now()
        state = job.state(now, self.pickup)
        if state == "failed":
            raise ApiError(409, f"job failed: {job.error}")
        if state != "completed":
            raise ApiError(409, MSG_NOT_COMPLETED)
        if not job.export_deleted and now > job.ready_at + self.config.retention:
            with self.lock:
                job.export_deleted = True
            shutil.rmtree(self.data_dir / job.id, ignore_errors=True)
        path = self.data_dir / job.id / "results.jsonl"
        if job.export_deleted or not path.exists():
            raise ApiError(404, f"export expired: results are kept for {self.config.retention:g} s after completion")
        self.counters["exports"][job.tenant] += 1
        return path

    def states(self) -> Counter[str]:
        """How many jobs are in each state now."""
        now = self.clock.now()
        return self.tally(self.jobs.values(), lambda job: job.state(now, self.pickup))

    # -- processing (worker threads) ---------------------------------------------------------

    def _process(self, job: Job) -> None:
        with self.lock:
            job.started_at = self.clock.now()
        folder = self.data_dir / job.id
        error: str | None = None
        counts = (0, 0, 0)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            client = self._s3(job)
            manifest = folder / "manifest.jsonl"
            self._fetch(client, job, manifest)
            self.counters["manifests_read"][job.tenant] += 1
            counts = self._code(job, manifest, folder / "results.jsonl", self._fetcher(client))
            manifest.unlink(missing_ok=True)
            if counts[0] == 0:
                raise JobFailure("the manifest has no tasks")
            if job.delivery_bucket:
                self._deliver(client, job, folder / "results.jsonl")
        except JobFailure as exc:
            error = str(exc)
        except Exception:
            log.exception("Refinery emulator: job %s failed", job.id)
            error = "internal error while processing the job"
        if error is not None:
            shutil.rmtree(folder, ignore_errors=True)
        finished = self.clock.now()
        with self.lock:
            job.total, job.done, job.failed = counts if error is None else (counts[0], 0, 0)
            job.error = error
            job.credentials = None
            job.ready_at = max(finished, job.created_at + self.config.processing_delay)
            job.outcome = "completed" if error is None else "failed"

    def _s3(self, job: Job) -> Any:
        if job.location.scheme == "gs":
            raise JobFailure(MSG_GCS)
        import boto3
        from botocore.config import Config

        creds = job.credentials or {}
        session = boto3.session.Session(
            aws_access_key_id=creds.get("access_key_id"),
            aws_secret_access_key=creds.get("secret_access_key"),
            aws_session_token=creds.get("session_token"),
            region_name=creds.get("region") or "us-east-1",
        )
        settings = Config(
            connect_timeout=5, read_timeout=30, retries={"max_attempts": 2}, s3={"addressing_style": "path"}
        )
        return session.client("s3", endpoint_url=self.config.s3_endpoint_url, config=settings)

    def _fetch(self, client: Any, job: Job, target: Path) -> None:
        loc = job.location
        try:
            size = client.head_object(Bucket=loc.bucket, Key=loc.key).get("ContentLength", 0)
            if size > self.config.max_upload_bytes:
                raise JobFailure(f"the manifest is larger than {self.config.max_upload_bytes} bytes")
            with target.open("wb") as sink:
                client.download_fileobj(loc.bucket, loc.key, sink)
        except JobFailure:
            raise
        except Exception as exc:
            raise JobFailure(_s3_reason(exc, f"could not read the manifest at {loc.url}")) from None

    def _deliver(self, client: Any, job: Job, results: Path) -> None:
        url = f"s3://{job.delivery_bucket}/{job.delivery_key}"
        try:
            client.upload_file(
                str(results), job.delivery_bucket, job.delivery_key, ExtraArgs={"ContentType": "application/x-ndjson"}
            )
        except Exception as exc:
            raise JobFailure(_s3_reason(exc, f"could not deliver the results to {url}")) from None
        self.counters["deliveries"][job.tenant] += 1

    def _fetcher(self, client: Any) -> Callable[[str], bytes]:
        """Reads a record object by its URL from the S3 endpoint: ``s3://`` (and https S3 URLs) with the
        job's credentials, a presigned URL of the endpoint as it is; anything else is a ``ValueError``."""
        endpoint = (self.config.s3_endpoint_url or "").rstrip("/")

        def fetch(url: str) -> bytes:
            try:
                if endpoint and url.startswith(endpoint + "/"):
                    with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 (the configured endpoint)
                        return bytes(answer.read(MAX_RECORD_BYTES))
                try:
                    location = parse_manifest_url(url)
                except ApiError:
                    raise ValueError(MSG_UNFETCHABLE) from None
                if location.scheme == "gs":
                    raise ValueError(MSG_GCS)
                body = client.get_object(Bucket=location.bucket, Key=location.key)["Body"]
                return bytes(body.read(MAX_RECORD_BYTES))
            except ValueError:
                raise
            except Exception as exc:
                raise ValueError(_s3_reason(exc, "data_url could not be fetched")) from None

        return fetch

    def _code(
        self, job: Job, manifest: Path, target: Path, fetch: Callable[[str], bytes] | None = None
    ) -> tuple[int, int, int]:
        """Code every manifest line into the export file, in shuffled blocks; (total, done, failed)."""
        coder = TaskCoder(job, self.models, self.config.record_failure_rate, self.config.seed, fetch)
        shuffle = random.Random(job.id)
        total = done = failed = 0
        block: list[bytes] = []
        with manifest.open("rb") as source, FileSink(target) as sink:
            for raw in lines_of(source):
                if not raw.strip():
                    continue
                result = coder.task(raw, total)
                total += 1
                if result["status"] == "completed":
                    done += 1
                else:
                    failed += 1
                block.append(_encode(result) + b"\n")
                if len(block) >= SHUFFLE_BLOCK:
                    shuffle.shuffle(block)
                    sink.write(b"".join(block))
                    block.clear()
                    if self._cancelled.is_set():
                        raise JobFailure("the service is shutting down")
            shuffle.shuffle(block)
            sink.write(b"".join(block))
        return total, done, failed

    # -- admin -------------------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        """Jobs by state."""
        return {"jobs_by_state": dict(self.states())}


def _s3_reason(exc: Exception, doing: str) -> str:
    """Why an S3 call failed, in words safe to show (never the credentials)."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "")) or "error"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken") or status == 403:
            return f"{doing}: access denied with the supplied credentials ({code})"
        if code in ("NoSuchKey", "NoSuchBucket", "NotFound", "404") or status == 404:
            return f"{doing}: no such object or bucket ({code})"
        return f"{doing}: {code}"
    if isinstance(exc, EndpointConnectionError):
        return f"{doing}: the storage endpoint is not reachable"
    if isinstance(exc, BotoCoreError):
        return f"{doing}: {type(exc).__name__}"
    if type(exc).__name__ == "S3UploadFailedError" and isinstance(exc.__cause__ or exc.__context__, ClientError):
        return _s3_reason(exc.__cause__ or exc.__context__, doing)  # type: ignore[arg-type]
    return f"{doing}: {type(exc).__name__}"
