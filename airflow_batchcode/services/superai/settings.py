"""What a super.ai client is configured with: the connection's password and extras, checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.services.apikey import ApiKeyOrigin
from airflow_batchcode.services.http.settings import HttpSettings
from airflow_batchcode.services.parsing import plain_id
from airflow_batchcode.services.registry import ServiceConfig

SERVICE = "superai"

DEFAULT_BASE_URL = "https://api.super.ai/v1"

MAX_PAGE_SIZE = 500

DEFAULT_TAGS = ("airflow-batchcode",)

DEFAULT_RATE_LIMIT = 10.0
"""Requests per second per connection: super.ai documents no limit, so this is a guess (extra ``rate_limit``)."""


def identifier(value: Any, what: str, error: type[Exception] = ConfigurationError) -> str:
    """``value`` (a string, or a whole number) as a plain identifier safe to put in a URL path."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return plain_id(value, f"super.ai {what}", error)


def _tags(value: Any) -> tuple[str, ...]:
    """The ``tags`` extra: a list of strings or a comma-separated string."""
    if value in (None, ""):
        return DEFAULT_TAGS
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(tag, str) for tag in items):
        raise ConfigurationError("Connection extra 'tags' must be a list of strings or a comma-separated string")
    return tuple(tag.strip() for tag in items if tag.strip())


@dataclass(frozen=True)
class SuperAiSettings(ApiKeyOrigin):
    """What a super.ai client needs to know.

    :param base_url: API origin, with or without the ``/v1`` suffix.
    :param api_key: the account's API key (hidden from ``repr``).
    :param app_uuid: the data program (app) the jobs are created in.
    :param rate_limit: API requests per second for this connection (0 disables the limiter).
    :param page_size: jobs per page when listing a batch's jobs (at most 500).
    :param download_workers: job responses fetched at once while downloading.
    :param tags: tags put on every batch.
    :param callback_url: URL super.ai calls when a job completes (may carry a token: hidden from ``repr``).
    :param http: timeouts, retries and URL rules.
    """

    service = SERVICE
    label = "super.ai"
    base_url: str
    api_key: str = field(repr=False)
    app_uuid: str
    rate_limit: float = DEFAULT_RATE_LIMIT
    page_size: int = MAX_PAGE_SIZE
    download_workers: int = 4
    tags: tuple[str, ...] = DEFAULT_TAGS
    callback_url: str | None = field(default=None, repr=False)
    http: HttpSettings = field(default_factory=HttpSettings)

    def __post_init__(self) -> None:
        self.check_connection("super.ai needs the account's API key as the connection password")
        if not self.app_uuid:
            raise ConfigurationError(
                "super.ai needs the connection extra 'app_uuid': the UUID of the data program that codes the jobs"
            )
        identifier(self.app_uuid, "app_uuid (connection extra)")
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ConfigurationError(f"Connection extra 'page_size' must be between 1 and {MAX_PAGE_SIZE}")
        if self.download_workers < 1:
            raise ConfigurationError("Connection extra 'download_workers' must be at least 1")

    @classmethod
    def from_config(cls, config: ServiceConfig) -> SuperAiSettings:
        """Settings from a connection: ``password`` is the API key, ``extra.app_uuid`` the app."""
        return cls(
            base_url=config.base_url or DEFAULT_BASE_URL,
            api_key=config.password,
            app_uuid=config.text("app_uuid") or "",
            rate_limit=config.number("rate_limit", DEFAULT_RATE_LIMIT),
            page_size=int(config.number("page_size", MAX_PAGE_SIZE)),
            download_workers=int(config.number("download_workers", 4)),
            tags=_tags(config.extra.get("tags")),
            callback_url=config.text("callback_url"),
            http=config.http_settings(),
        )

    @property
    def api_root(self) -> str:
        """The base URL ending in ``/v1``."""
        root = self.base_url.rstrip("/")
        return root if root.endswith("/v1") else root + "/v1"
