"""A Refinery job as the emulator keeps it, and the checks of the create request that makes one."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from airflow_batchcode.emulator.contract import ApiError

DELIVERY_KEY = "refinery/{job_id}/results.jsonl"

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


def job_from_request(tenant: str, body: Any, now: float) -> Job:
    """A new job of ``tenant`` from a ``POST /v1/jobs`` body, checked (a 400 says what is wrong)."""
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
    return Job(
        id=f"job_{uuid.uuid4().hex}",
        tenant=tenant,
        location=location,
        label_spec=spec,
        threshold=threshold,
        task_type=task_type,
        created_at=now,
        credentials=credentials,
        callback_url=_callback(body.get("callback_url")),
        delivery_bucket=delivery,
    )
