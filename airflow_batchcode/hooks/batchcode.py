"""BatchCodeHook: an Airflow ``batchcode`` connection turned into a service client."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook
from airflow.sdk.log import amask_secret, mask_secret

from airflow_batchcode.exceptions import BatchCodeError, ConfigurationError
from airflow_batchcode.services.base import AsyncBatchCodeClient, BatchCodeClient
from airflow_batchcode.services.registry import ServiceConfig, build_async_client, build_client
from airflow_batchcode.services.transport import is_loopback

EXTRA_PREFIX = "extra__batchcode__"
_background: set[asyncio.Task[None]] = set()


def service_config_from_connection(conn: Any) -> ServiceConfig:
    """Read host, login, password and extra of an Airflow connection into a :class:`ServiceConfig`.

    ``host`` may carry its scheme (``https://partner-coder.api.abs.gov.au``); without one,
    ``https`` is assumed, or ``http`` for loopback hosts. ``extra`` keys may be plain or
    carry the UI's ``extra__batchcode__`` prefix.
    """
    extra = {key.removeprefix(EXTRA_PREFIX): value for key, value in _extra_dict(conn).items()}
    extra = {key: value for key, value in extra.items() if value not in (None, "")}
    host = (conn.host or "").strip()
    if not host:
        raise ConfigurationError(f"Connection {conn.conn_id!r} has no host (the service's API origin)")
    if "://" not in host:
        scheme = extra.get("scheme") or conn.schema or ("http" if is_loopback(host.split(":")[0]) else "https")
        host = f"{scheme}://{host}"
    parts = urlsplit(host)
    if conn.port and not parts.port:
        host = f"{parts.scheme}://{parts.hostname}:{conn.port}{parts.path}"
    service = str(extra.get("service", "abs")).lower()
    return ServiceConfig(
        service=service,
        base_url=host.rstrip("/"),
        login=conn.login or "",
        password=conn.password or "",
        extra=extra,
    )


def _extra_dict(conn: Any) -> dict[str, Any]:
    extra = getattr(conn, "extra_dejson", None)
    if isinstance(extra, dict):
        return extra
    raw = getattr(conn, "extra", None) or "{}"
    try:
        value = json.loads(raw)
    except ValueError:
        raise ConfigurationError(f"Connection {conn.conn_id!r} has an extra that is not JSON") from None
    return value if isinstance(value, dict) else {}


def _mask_from(loop: asyncio.AbstractEventLoop, value: str) -> None:
    """Register a secret with the masker on ``loop`` without blocking it (callable from any thread)."""

    def schedule() -> None:
        task = loop.create_task(amask_secret(value))
        _background.add(task)
        task.add_done_callback(_background.discard)

    loop.call_soon_threadsafe(schedule)


class BatchCodeHook(BaseHook):
    """Talks to a batch coding service through an Airflow connection of type ``batchcode``.

    Connection: ``host`` is the API origin (no ``/v1``), ``login``/``password`` the client id
    and secret (ABS) or the API key in ``password`` (Refinery, super.ai, Gravity), ``extra``
    holds ``service`` (``abs``, ``refinery``, ``superai``, ``gravity``), and optionally
    ``topic``, ``auth_url``, ``rate_limit``, ``connect_timeout``, ``read_timeout``,
    ``max_attempts`` and ``allow_insecure_http``; services have their own extras (README).

    :param batchcode_conn_id: the connection id.
    """

    conn_name_attr = "batchcode_conn_id"
    default_conn_name = "batchcode_default"
    conn_type = "batchcode"
    hook_name = "Batch Coding Service"

    def __init__(self, batchcode_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batchcode_conn_id = batchcode_conn_id

    @cached_property
    def config(self) -> ServiceConfig:
        """The connection, read once; with an object store when it names a ``manifest_location``."""
        config = service_config_from_connection(self.get_connection(self.batchcode_conn_id))
        if config.extra.get("manifest_location"):
            from airflow_batchcode.hooks.object_store import object_store_for

            config = dataclasses.replace(config, object_store=object_store_for(config.extra))
        return config

    @property
    def service(self) -> str:
        return self.config.service

    @property
    def default_topic(self) -> str | None:
        """The topic named in the connection's extra, if any."""
        topic = self.config.extra.get("topic")
        return str(topic) if topic else None

    @cached_property
    def client(self) -> BatchCodeClient:
        """The service's sync client; every secret it learns is masked in logs."""
        return build_client(self.config, on_secret=mask_secret)

    def get_conn(self) -> BatchCodeClient:
        return self.client

    async def get_async_client(self) -> AsyncBatchCodeClient:
        """An async client for the trigger, built without blocking the event loop.

        The connection is looked up asynchronously; the client (whose HTTP pool loads TLS
        certificates, a blocking step) is constructed in a worker thread.
        """
        conn = await self.aget_connection(self.batchcode_conn_id)
        config = service_config_from_connection(conn)
        loop = asyncio.get_running_loop()
        return await asyncio.to_thread(build_async_client, config, lambda value: _mask_from(loop, value))

    def rename_job(self, job_id: str, name: str) -> dict[str, Any]:
        """Rename a remote job (Gravity); the job object as the service returns it."""
        rename = getattr(self.client, "rename_job", None)
        if rename is None:
            raise ConfigurationError(f"The {self.service} service cannot rename jobs")
        result: dict[str, Any] = rename(job_id, name)
        return result

    def latest_jobs(self) -> list[dict[str, Any]]:
        """The service's most recent jobs of this account (Gravity), newest first."""
        latest = getattr(self.client, "latest_jobs", None)
        if latest is None:
            raise ConfigurationError(f"The {self.service} service cannot list its latest jobs")
        jobs: list[dict[str, Any]] = latest()
        return jobs

    def close(self) -> None:
        """Release the client's connections."""
        if "client" in self.__dict__:
            self.client.close()
            del self.__dict__["client"]

    def test_connection(self) -> tuple[bool, str]:
        """Authenticate and make one cheap call, for the UI's *Test* button."""
        try:
            client = self.client
            topics = getattr(client, "list_topics", None)
            if topics is not None:
                names = ", ".join(t.uri_name for t in topics())
                return True, f"Connected to {self.service} at {self.config.base_url}; topics: {names}"
            return True, f"Connected to {self.service} at {self.config.base_url}"
        except BatchCodeError as exc:
            return False, str(exc)
        finally:
            self.close()
