"""A connection reduced to what a service client needs, and the client the service catalogue builds for it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.services.base import AsyncBatchCodeClient, BatchCodeClient, ObjectStore, SecretCallback
from airflow_batchcode.services.budget.settings import QuotaSettings
from airflow_batchcode.services.budget.window import DAY
from airflow_batchcode.services.catalogue import spec_for
from airflow_batchcode.services.http.retry import RetryPolicy
from airflow_batchcode.services.http.settings import HttpSettings


@dataclass(frozen=True)
class ServiceConfig:
    """A connection, reduced to what a service client needs (no Airflow types).

    :param service: the service's name in the catalogue (:data:`~airflow_batchcode.services.catalogue.SERVICES`).
    :param base_url: API origin with scheme.
    :param login: client id (ABS); not used by the API-key services.
    :param password: client secret or API key (hidden from ``repr``).
    :param extra: the connection's extra settings.
    :param object_store: where manifests are staged for services that read their input from object
        storage (Refinery; super.ai's ``inputsFileUrl``) and delivered results are read; the hook supplies it.
    """

    service: str
    base_url: str
    login: str = ""
    password: str = field(default="", repr=False)
    extra: Mapping[str, Any] = field(default_factory=dict)
    object_store: ObjectStore | None = field(default=None, repr=False, compare=False)

    def text(self, key: str, default: str | None = None) -> str | None:
        """A text extra setting, or ``default`` when missing or empty."""
        value = self.extra.get(key)
        return default if value in (None, "") else str(value)

    def number(self, key: str, default: float) -> float:
        """A numeric extra setting, or ``default`` when missing or empty; a clear error when not a number.

        Empty counts as missing because Airflow's connection form saves a field left blank as
        ``null`` or ``""``.
        """
        value = self.extra.get(key)
        if value in (None, ""):
            return default
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"Connection extra {key!r} must be a number, got {value!r}") from None

    def flag(self, key: str, default: bool = False) -> bool:
        """A boolean extra setting (accepts true/false, yes/no, 1/0), or ``default`` when missing or empty."""
        value = self.extra.get(key)
        if value in (None, ""):
            return default
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)

    def http_settings(self) -> HttpSettings:
        """Timeouts, retries and URL rules from the extra settings."""
        return HttpSettings(
            connect_timeout=self.number("connect_timeout", 10.0),
            read_timeout=self.number("read_timeout", 60.0),
            retry=RetryPolicy(
                max_attempts=int(self.number("max_attempts", 6)),
                backoff_base=self.number("backoff_base", 1.0),
                backoff_max=self.number("backoff_max", 60.0),
            ),
            allow_insecure_http=self.flag("allow_insecure_http"),
            quota=self.quota_settings(),
        )

    def quota_settings(self) -> QuotaSettings:
        """The request quota (extras ``daily_quota``, ``quota_window``) and the shared budget
        (``budget_url``, ``budget_prefix``); a missing ``daily_quota`` leaves the service's default."""
        quota = self.extra.get("daily_quota")
        return QuotaSettings(
            daily_quota=None if quota in (None, "") else int(self.number("daily_quota", 0)),
            quota_window=self.number("quota_window", DAY),
            budget_url=self.text("budget_url"),
            budget_prefix=self.text("budget_prefix", "batchcode:budget") or "batchcode:budget",
        )


def build_client(config: ServiceConfig, on_secret: SecretCallback | None = None) -> BatchCodeClient:
    """A synchronous client for ``config``, built by its service's spec (:mod:`.catalogue`)."""
    return spec_for(config.service).build_client(config, on_secret)


def build_async_client(config: ServiceConfig, on_secret: SecretCallback | None = None) -> AsyncBatchCodeClient:
    """An async (status) client for ``config``."""
    return spec_for(config.service).build_async_client(config, on_secret)
