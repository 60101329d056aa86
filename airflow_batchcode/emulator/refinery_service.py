"""The ASG Refinery emulator's state: API keys and tenants, jobs, manifest reading, coding and delivery.

Documented (``shared/SERVICES.md`` §2, seed 001): Bearer API keys; ``{"error"}`` bodies; 401 for a
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
* ``data_url`` must be a ``data:`` URL (percent-encoded or ``;base64``) holding a JSON object with
  ``occp_text`` and ``tasks_text`` (``text/plain`` content is taken as the job title); http(s) URLs
  cannot be fetched here and fail their task.
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

import base64
import hashlib
import hmac
import logging
import random
import re
import shutil
import tempfile
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote_to_bytes, urlsplit

import msgspec

from airflow_batchcode.emulator.abs_service import Clock
from airflow_batchcode.emulator.coding_model import CodingModel, load_models
from airflow_batchcode.emulator.config import EmulatorConfig
from airflow_batchcode.emulator.contract import ApiError, iso_time
from airflow_batchcode.emulator.faults import FaultInjector, settings_from
from airflow_batchcode.emulator.files import FileSink

log = logging.getLogger(__name__)

MSG_BAD_KEY = "invalid API key"
MSG_QUOTA = "quota exhausted"
MSG_NOT_FOUND = "job not found"
MSG_NOT_COMPLETED = "job is not completed yet"
MSG_GCS = "GCS not reachable from the emulator"
MSG_ACCEPTED = "Job accepted. Manifest will be processed asynchronously."
DELIVERY_KEY = "refinery/{job_id}/results.jsonl"
MAX_LINE = 1 << 20
SHUFFLE_BLOCK = 64

_encode = msgspec.json.encode
_decode = msgspec.json.decode
_LEADING_CODE = re.compile(r"^\s*([0-9]+)")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_VIRTUAL_HOST = re.compile(r"^(?P<bucket>[a-z0-9][a-z0-9.-]*[a-z0-9])\.s3(?:[.-][a-z0-9-]+)?\.amazonaws\.com$")
_PATH_HOST = re.compile(r"^s3(?:[.-][a-z0-9-]+)?\.amazonaws\.com$")

JobState = Literal["accepted", "processing", "completed", "failed"]


class JobFailure(Exception):
    """The job as a whole cannot go on: it fails with this message."""


@dataclass(frozen=True)
class ManifestLocation:
    """Where a job's manifest is: ``scheme`` is ``s3`` or ``gs``."""

    scheme: str
    bucket: str
    key: str

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}"


def parse_manifest_url(value: Any) -> ManifestLocation:
    """``s3://b/k``, ``gs://b/k`` or an https S3 URL (virtual-hosted or path style), or a 400."""
    problem = ApiError(400, "manifest_url must be an s3://, gs:// or https S3 URL of the manifest object")
    if not isinstance(value, str) or len(value) > 2048:
        raise problem
    try:
        parts = urlsplit(value)
    except ValueError:
        raise problem from None
    host = (parts.hostname or "").lower()
    path = parts.path.lstrip("/")
    if parts.scheme in ("s3", "gs"):
        bucket, key = parts.netloc, path
    elif parts.scheme == "https" and (match := _VIRTUAL_HOST.match(host)):
        bucket, key = match.group("bucket"), path
    elif parts.scheme == "https" and _PATH_HOST.match(host):
        bucket, _, key = path.partition("/")
    else:
        raise problem
    if not bucket or not key or not _BUCKET.match(bucket):
        raise problem
    return ManifestLocation("gs" if parts.scheme == "gs" else "s3", bucket, key)


@dataclass
class Job:
    """One batch job. Its visible status is computed from these facts and the clock."""

    id: str
    tenant: str
    location: ManifestLocation
    label_spec: dict[str, Any]
    threshold: int
    task_type: str
    created_at: float
    credentials: dict[str, str] | None = field(default=None, repr=False)
    callback_url: str | None = None
    delivery_bucket: str | None = None
    started_at: float | None = None
    outcome: Literal["completed", "failed"] | None = None
    ready_at: float = 0.0
    error: str | None = None
    total: int = 0
    done: int = 0
    failed: int = 0
    export_deleted: bool = False

    def state(self, now: float, pickup: float) -> JobState:
        """The status at time ``now``; a job stays ``accepted`` at least ``pickup`` seconds."""
        if self.started_at is None or now < self.created_at + pickup:
            return "accepted"
        if self.outcome is None or now < self.ready_at:
            return "processing"
        return self.outcome

    @property
    def delivery_key(self) -> str:
        return DELIVERY_KEY.format(job_id=self.id)


def _text(body: dict[str, Any], name: str, *, required: bool = False, default: str | None = None) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, f"{name} is required")
        return default
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{name} must be a non-empty string")
    return value


def _label_spec(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, "label_spec is required: an object with question and options")
    question, options = value.get("question"), value.get("options")
    if not isinstance(question, str) or not question.strip():
        raise ApiError(400, "label_spec.question must be a non-empty string")
    if (
        not isinstance(options, list)
        or len(options) < 2
        or not all(isinstance(o, str) and o.strip() for o in options)
        or len(set(options)) != len(options)
    ):
        raise ApiError(400, "label_spec.options must hold at least 2 distinct non-empty strings")
    return {"question": question, "options": list(options)}


def _threshold(value: Any) -> int:
    if value is None:
        return 3
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 10:
        raise ApiError(400, "consensus_threshold must be an integer from 2 to 10")
    return value


def _credentials(value: Any, scheme: str) -> dict[str, str]:
    if scheme == "gs":
        if not isinstance(value, dict) or not isinstance(value.get("service_account_json"), str):
            raise ApiError(400, "credentials.service_account_json is required for gs:// manifests")
        return {"service_account_json": value["service_account_json"]}
    names = ("access_key_id", "secret_access_key")
    if not isinstance(value, dict) or not all(isinstance(value.get(n), str) and value[n] for n in names):
        raise ApiError(400, "credentials with access_key_id, secret_access_key and region are required for S3")
    for optional in ("region", "session_token"):
        if value.get(optional) is not None and not isinstance(value[optional], str):
            raise ApiError(400, f"credentials.{optional} must be a string")
    return {k: value[k] for k in (*names, "region", "session_token") if value.get(k)}


def _delivery(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") != "s3":
        raise ApiError(400, 'delivery must be {"type": "s3", "bucket": "..."}')
    bucket = value.get("bucket")
    if not isinstance(bucket, str) or not _BUCKET.match(bucket):
        raise ApiError(400, "delivery.bucket must be a valid S3 bucket name")
    return bucket


def _callback(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https") or len(value) > 2048:
        raise ApiError(400, "callback_url must be an http(s) URL")
    return value


class RefineryService:
    """Everything the Refinery emulator remembers. Handlers run on the event loop; jobs are processed
    on a thread pool and touch shared state only under ``lock``.

    :param config: the emulator's settings.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.clock = Clock()
        self.faults = FaultInjector(settings_from(config), seed=config.seed)
        self.models = load_models()
        self.owns_data_dir = config.data_dir is None
        self.data_dir = (
            Path(tempfile.mkdtemp(prefix="refinery-emulator-"))
            if config.data_dir is None
            else Path(config.data_dir) / "refinery"
        )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self._quota: dict[str, tuple[int, int]] = {}
        self._cancelled = threading.Event()
        self._pool = ThreadPoolExecutor(max(1, config.processing_workers), thread_name_prefix="refinery-emulator")
        self.counters: dict[str, Counter[str]] = {
            name: Counter() for name in ("jobs_created", "requests", "exports", "deliveries", "manifests", "throttled")
        }

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the workers and delete the data directory if the service created it."""
        self._cancelled.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

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
        if self.config.daily_quota > 0:
            day = int(self.clock.now() // 86400)
            seen, used = self._quota.get(tenant, (day, 0))
            used = used if seen == day else 0
            if used >= self.config.daily_quota:
                self.counters["throttled"]["daily_quota"] += 1
                raise ApiError(403, MSG_QUOTA)
            self._quota[tenant] = (day, used + 1)
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
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        location = parse_manifest_url(body.get("manifest_url"))
        spec = _label_spec(body.get("label_spec"))
        threshold = _threshold(body.get("consensus_threshold"))
        task_type = _text(body, "task_type", default="text_classification") or "text_classification"
        credentials = _credentials(body.get("credentials"), location.scheme)
        delivery = _delivery(body.get("delivery"))
        if delivery and "secret_access_key" not in credentials:
            raise ApiError(400, "delivery to S3 needs S3 credentials")
        job = Job(
            id=f"job_{uuid.uuid4().hex}",
            tenant=tenant,
            location=location,
            label_spec=spec,
            threshold=threshold,
            task_type=task_type,
            created_at=self.clock.now(),
            credentials=credentials,
            callback_url=_callback(body.get("callback_url")),
            delivery_bucket=delivery,
        )
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
        with self.lock:
            jobs = list(self.jobs.values())
        return Counter(job.state(now, self.pickup) for job in jobs)

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
            self.counters["manifests"][job.tenant] += 1
            counts = self._code(job, manifest, folder / "results.jsonl")
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

    def _code(self, job: Job, manifest: Path, target: Path) -> tuple[int, int, int]:
        """Code every manifest line into the export file, in shuffled blocks; (total, done, failed)."""
        coder = TaskCoder(job, self.models, self.config.record_failure_rate, self.config.seed)
        shuffle = random.Random(job.id)
        total = done = failed = 0
        block: list[bytes] = []
        with manifest.open("rb") as source, FileSink(target) as sink:
            for raw in _lines(source):
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

    def stats(self) -> dict[str, Any]:
        """Counters for ``GET /_emulator/stats``."""
        c = self.counters
        return {
            "jobs_created": dict(c["jobs_created"]),
            "jobs_by_state": dict(self.states()),
            "requests": dict(c["requests"]),
            "faults": dict(self.faults.injected),
            "manifests_read": dict(c["manifests"]),
            "exports": dict(c["exports"]),
            "deliveries": dict(c["deliveries"]),
            "throttled": dict(c["throttled"]),
            "clock_offset": self.clock.offset,
        }


def _lines(source: Any) -> Any:
    """Lines of a binary file, each at most :data:`MAX_LINE` bytes (a longer one is cut, the rest skipped)."""
    while raw := source.readline(MAX_LINE):
        if len(raw) == MAX_LINE and not raw.endswith(b"\n"):
            rest = raw
            while rest and not rest.endswith(b"\n"):
                rest = source.readline(MAX_LINE)
        yield raw


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


class TaskCoder:
    """Turns one manifest line into one export line: decode the ``data_url``, code it, simulate workers.

    :param job: the job (label spec, threshold, id).
    :param models: topic → models, as :func:`load_models` returns.
    :param failure_rate: share of tasks failed on purpose, chosen by a hash of the line.
    :param seed: mixes into that hash.
    """

    def __init__(self, job: Job, models: dict[str, list[CodingModel]], failure_rate: float, seed: int) -> None:
        question = str(job.label_spec["question"]).lower()
        topic = "osca" if "osca" in question else "anzsco"
        self.model = models[topic][-1]
        self.options: list[str] = job.label_spec["options"]
        self.by_code: dict[str, str] = {}
        for option in self.options:
            match = _LEADING_CODE.match(option)
            if match:
                self.by_code.setdefault(match.group(1), option)
        self.job = job
        self.failure_rate = failure_rate
        self.seed = seed

    def task(self, raw: bytes, number: int) -> dict[str, Any]:
        """The export line of manifest line ``number``."""
        task_id = "task_" + hashlib.sha256(f"{self.job.id}:{number}".encode()).hexdigest()[:20]
        try:
            line = _decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            line = None
        if not isinstance(line, dict):
            return _failed(task_id, {}, None, f"manifest line {number + 1} is not a JSON object")
        metadata = line.get("metadata", {})
        url = line.get("data_url")
        if not isinstance(url, str) or not url:
            return _failed(task_id, metadata, None, "data_url is required")
        try:
            occp, tasks = decode_data_url(url)
        except ValueError as exc:
            return _failed(task_id, metadata, url, str(exc))
        digest = hashlib.sha256(b"%d:" % self.seed + raw.strip()).digest()
        if int.from_bytes(digest[:4], "big") / 2**32 < self.failure_rate:
            return _failed(task_id, metadata, url, "no worker could complete the task")
        return {
            "task_id": task_id,
            "status": "completed",
            "data_url": url,
            "metadata": metadata,
            **self.label(occp, tasks),
        }

    def label(self, occp: str, tasks: str) -> dict[str, Any]:
        """Consensus fields for a record: the label, confidence and the simulated workers."""
        outcome = self.model.code(occp, tasks)
        best = outcome.result or (outcome.suggestions[0] if outcome.suggestions else None)
        confidence = best.confidence if best else 0.0
        spread = int.from_bytes(hashlib.sha256(f"{occp}\x00{tasks}".encode()).digest()[:4], "big")
        workers = self.job.threshold + (1 if spread % 4 == 0 else 0)
        if outcome.status == "successful" and confidence >= 0.5:
            agreement = workers
        elif outcome.status == "successful":
            agreement = workers - 1
        else:
            agreement = max(1, self.job.threshold - 1 - spread % 2)
        option = self.by_code.get(best.category[:1]) if best else None
        if option is None:
            option = self.options[spread % len(self.options)]
        return {
            "consensus_label": option if agreement >= self.job.threshold else None,
            "confidence": round((agreement / workers) * (0.5 + 0.5 * confidence), 2),
            "worker_count": workers,
            "agreement_count": agreement,
        }


def _failed(task_id: str, metadata: Any, url: str | None, error: str) -> dict[str, Any]:
    line: dict[str, Any] = {"task_id": task_id, "status": "failed"}
    if url is not None:
        line["data_url"] = url[:4096]
    line.update(
        metadata=metadata, consensus_label=None, confidence=None, worker_count=0, agreement_count=0, error=error
    )
    return line


def decode_data_url(url: str) -> tuple[str, str]:
    """``(occp_text, tasks_text)`` from a ``data:`` URL; ``ValueError`` says what is wrong."""
    if url.startswith(("http://", "https://")):
        raise ValueError("data_url could not be fetched: the emulator only reads data: URLs")
    if not url.startswith("data:"):
        raise ValueError("data_url must be a data: or http(s) URL")
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise ValueError("data_url is not a valid data: URL")
    try:
        data = base64.b64decode(payload, validate=True) if header.endswith(";base64") else unquote_to_bytes(payload)
        text = data.decode("utf-8")
    except ValueError:
        raise ValueError("data_url content could not be decoded") from None
    media = header.split(";", 1)[0].strip().lower() or "text/plain"
    if media == "text/plain":
        return text.strip(), ""
    try:
        record = _decode(text)
    except (msgspec.DecodeError, RecursionError):
        record = None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("occp_text"), str)
        or not isinstance(record.get("tasks_text"), str)
    ):
        raise ValueError("data_url content must be a JSON object with string occp_text and tasks_text")
    return record["occp_text"], record["tasks_text"]
