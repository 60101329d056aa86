"""Which client serves which ``extra.service``: the one place new services are plugged in."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.services.base import AsyncBatchCodeClient, BatchCodeClient, ObjectStore, SecretCallback
from airflow_batchcode.services.retry import RetryPolicy
from airflow_batchcode.services.transport import HttpSettings


@dataclass(frozen=True)
class ServiceConfig:
    """A connection, reduced to what a service client needs (no Airflow types).

    :param service: ``abs``, ``refinery``, ``superai`` or ``gravity``.
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
        """A numeric extra setting, with a clear error when it is not a number."""
        value = self.extra.get(key, default)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"Connection extra {key!r} must be a number, got {value!r}") from None

    def flag(self, key: str, default: bool = False) -> bool:
        """A boolean extra setting (accepts true/false, yes/no, 1/0)."""
        value = self.extra.get(key, default)
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
        )


@dataclass(frozen=True)
class ServiceFactory:
    """How to build the sync and async clients of one service."""

    sync: Callable[[ServiceConfig, SecretCallback | None], BatchCodeClient]
    async_: Callable[[ServiceConfig, SecretCallback | None], AsyncBatchCodeClient]


def _abs_factory() -> ServiceFactory:
    from airflow_batchcode.services import abs as abs_service

    def settings(config: ServiceConfig) -> abs_service.AbsSettings:
        return abs_service.AbsSettings(
            base_url=config.base_url,
            client_id=config.login,
            client_secret=config.password,
            auth_url=config.extra.get("auth_url") or None,
            rate_limit=config.number("rate_limit", 1.0),
            http=config.http_settings(),
        )

    return ServiceFactory(
        sync=lambda config, on_secret: abs_service.AbsClient(settings(config), on_secret=on_secret),
        async_=lambda config, on_secret: abs_service.AsyncAbsClient(settings(config), on_secret=on_secret),
    )


def _module_factory(service: str) -> Callable[[], ServiceFactory]:
    """The factory of a service whose module (or package) ``services/<service>`` defines ``service_factory()``."""

    def load() -> ServiceFactory:
        module = importlib.import_module(f"airflow_batchcode.services.{service}")
        factory: ServiceFactory = module.service_factory()
        return factory

    return load


_FACTORIES: dict[str, Callable[[], ServiceFactory]] = {
    "abs": _abs_factory,
    "refinery": _module_factory("refinery"),
    "superai": _module_factory("superai"),
    "gravity": _module_factory("gravity"),
}
SERVICES = tuple(_FACTORIES)


def factory_for(service: str) -> ServiceFactory:
    """The factory of ``service``; a clear error names the supported ones."""
    try:
        return _FACTORIES[service]()
    except KeyError:
        raise ConfigurationError(
            f"Unknown batch coding service {service!r}; supported: {', '.join(SERVICES)}"
        ) from None


def build_client(config: ServiceConfig, on_secret: SecretCallback | None = None) -> BatchCodeClient:
    """A synchronous client for ``config``."""
    return factory_for(config.service).sync(config, on_secret)


def build_async_client(config: ServiceConfig, on_secret: SecretCallback | None = None) -> AsyncBatchCodeClient:
    """An async (status) client for ``config``."""
    return factory_for(config.service).async_(config, on_secret)
