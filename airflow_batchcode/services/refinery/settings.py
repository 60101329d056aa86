"""What a Refinery client is configured with: the connection's extras, checked."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.services.apikey import ApiKeyOrigin
from airflow_batchcode.services.http.settings import HttpSettings
from airflow_batchcode.services.registry import ServiceConfig

SERVICE = "refinery"
DEFAULT_TASK_TYPE = "text_classification"
DEFAULT_THRESHOLD = 3
DEFAULT_DELIVERY_KEY = "refinery/{job_id}/results.jsonl"
DEFAULT_QUESTION = "Which major group of {topic} does this job belong to?"
MAJOR_GROUPS = (
    "1 Managers",
    "2 Professionals",
    "3 Technicians and Trades Workers",
    "4 Community and Personal Service Workers",
    "5 Clerical and Administrative Workers",
    "6 Sales Workers",
    "7 Machinery Operators and Drivers",
    "8 Labourers",
)
"""The default label options: the major groups, identical in ANZSCO 2022 and OSCA 2024."""
TOPIC_NAMES = {"anzsco": "ANZSCO", "osca": "OSCA"}
POLL_SCHEDULE = (5.0, 10.0, 20.0)
POLL_CAP = 60.0
"""The service's advice for status polls: 5, 10, 20 s, then doubling, at most 60 s apart."""
SESSION_CHOICES = ("pass", "refuse")
RECORD_URL_CHOICES = ("object", "presigned", "data")
"""How manifest lines reference their record (see :attr:`RefinerySettings.record_urls`)."""
PRESIGNED_SECONDS = 7 * 24 * 3600
"""Lifetime of presigned record URLs: SigV4's longest, so a job that waits in a queue can still read them."""
"""What a client may do with temporary AWS credentials (see :attr:`RefinerySettings.session_credentials`)."""
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def poll_delay(attempt: int, base: float = POLL_SCHEDULE[0]) -> float:
    """Seconds to wait before poll number ``attempt`` (0-based): ``base``, doubling, capped at 60 s."""
    return min(POLL_CAP, base * 2 ** max(0, attempt))


def _options(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigurationError("Connection extra 'label_options' must be a list or a JSON list") from None
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigurationError("Connection extra 'label_options' must be a list of non-empty strings")
    options = tuple(v.strip() for v in value)
    if len(options) < 2 or len(set(options)) != len(options):
        raise ConfigurationError("Connection extra 'label_options' needs at least two distinct options")
    return options


@dataclass(frozen=True)
class RefinerySettings(ApiKeyOrigin):
    """What a Refinery client needs to know.

    :param base_url: API origin, e.g. ``https://api.asgrefinery.io`` (no ``/v1``).
    :param api_key: the Bearer API key (hidden from ``repr``).
    :param label_question: the question put to workers; ``{topic}`` names the classification.
    :param label_options: the answers workers choose from (default: the major groups).
    :param consensus_threshold: workers who must agree for a consensus (2-10).
    :param task_type: Refinery's task type.
    :param callback_url: job-level webhook, if any.
    :param delivery_bucket: deliver results to this S3 bucket instead of the export endpoint.
    :param delivery_key: object key of delivered results; ``{job_id}`` is replaced.
    :param export_wait_attempts: retries of an export answering 409 before giving up.
    :param export_wait_base: first wait between those retries (then doubling, capped at 60 s).
    :param rate_limit: API requests per second (0 = no limit: none is documented).
    :param record_urls: how manifest lines reference their record: ``"object"`` (default) stages each record
        as a small JSON object beside the manifest and references it by its ``s3://`` or ``gs://`` URL (read
        with the job's credentials), ``"presigned"`` by a presigned https URL of that object (S3 only),
        ``"data"`` (opt-in) puts the texts in the manifest as ``data:`` URLs.
    :param session_credentials: what to do with temporary AWS credentials (a session token), which the
        seed's ``credentials`` object does not name: ``"pass"`` sends them as ``session_token``
        (an assumption about the real service), ``"refuse"`` fails before the job is created.
    :param http: timeouts, retries and URL rules.
    """

    service = SERVICE
    label = "Refinery"
    base_url: str
    api_key: str = field(repr=False)
    label_question: str = DEFAULT_QUESTION
    label_options: tuple[str, ...] = MAJOR_GROUPS
    consensus_threshold: int = DEFAULT_THRESHOLD
    task_type: str = DEFAULT_TASK_TYPE
    callback_url: str | None = None
    delivery_bucket: str | None = None
    delivery_key: str = DEFAULT_DELIVERY_KEY
    export_wait_attempts: int = 4
    export_wait_base: float = POLL_SCHEDULE[0]
    rate_limit: float = 0.0
    session_credentials: str = "pass"
    record_urls: str = "object"
    http: HttpSettings = field(default_factory=HttpSettings)

    def __post_init__(self) -> None:
        self.check_connection("Refinery needs an API key: set it as the connection's password")
        if not 2 <= self.consensus_threshold <= 10:
            raise ConfigurationError(f"consensus_threshold must be 2 to 10, got {self.consensus_threshold}")
        if not self.label_question.strip():
            raise ConfigurationError("label_question must not be empty")
        _options(list(self.label_options))
        if not self.task_type.strip():
            raise ConfigurationError("task_type must not be empty")
        if self.callback_url and urlsplit(self.callback_url).scheme not in ("http", "https"):
            raise ConfigurationError("callback_url must be an http(s) URL")
        if self.delivery_bucket and not BUCKET.match(self.delivery_bucket):
            raise ConfigurationError(f"delivery_bucket {self.delivery_bucket!r} is not a valid S3 bucket name")
        if "{job_id}" not in self.delivery_key:
            raise ConfigurationError("delivery_key must contain {job_id}")
        if self.record_urls not in RECORD_URL_CHOICES:
            raise ConfigurationError(
                f"record_urls must be one of {', '.join(RECORD_URL_CHOICES)}, got {self.record_urls!r}"
            )
        if self.session_credentials not in SESSION_CHOICES:
            raise ConfigurationError(
                f"session_credentials must be one of {', '.join(SESSION_CHOICES)}, got {self.session_credentials!r}"
            )
        if self.export_wait_attempts < 0 or self.export_wait_base < 0:
            raise ConfigurationError("export_wait_attempts and export_wait_base must not be negative")

    @classmethod
    def from_config(cls, config: ServiceConfig) -> RefinerySettings:
        """Settings from a connection's fields and extras."""
        threshold = config.number("consensus_threshold", DEFAULT_THRESHOLD)
        if threshold != int(threshold):
            raise ConfigurationError(f"Connection extra 'consensus_threshold' must be a whole number, got {threshold}")
        options = config.extra.get("label_options")
        return cls(
            base_url=config.base_url,
            api_key=config.password,
            label_question=config.text("label_question", DEFAULT_QUESTION) or DEFAULT_QUESTION,
            label_options=MAJOR_GROUPS if options in (None, "", []) else _options(options),
            consensus_threshold=int(threshold),
            task_type=config.text("task_type", DEFAULT_TASK_TYPE) or DEFAULT_TASK_TYPE,
            callback_url=config.text("callback_url"),
            delivery_bucket=config.text("delivery_bucket"),
            delivery_key=config.text("delivery_key", DEFAULT_DELIVERY_KEY) or DEFAULT_DELIVERY_KEY,
            export_wait_attempts=int(config.number("export_wait_attempts", 4)),
            export_wait_base=config.number("export_wait_base", POLL_SCHEDULE[0]),
            rate_limit=config.number("rate_limit", 0.0),
            session_credentials=config.text("session_credentials", "pass") or "pass",
            record_urls=config.text("record_urls", "object") or "object",
            http=config.http_settings(),
        )

    def label_spec(self, topic: str) -> dict[str, Any]:
        """The ``label_spec`` of a job coding against ``topic``."""
        name = TOPIC_NAMES.get(topic.lower(), topic.upper())
        return {"question": self.label_question.replace("{topic}", name), "options": list(self.label_options)}
