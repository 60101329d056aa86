"""BatchCodeHook: an Airflow ``batchcode`` connection turned into a service client, and the
lifecycle of one remote operation (:mod:`airflow_batchcode.hooks.lifecycle`) applied through it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from functools import cached_property
from typing import IO, Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook
from airflow.sdk.log import amask_secret, mask_secret

from airflow_batchcode.chunks import Chunk, ChunkResult
from airflow_batchcode.exceptions import (
    BatchCodeError,
    ConfigurationError,
    NotFoundError,
    UnexpectedResponseError,
    UploadRejectedError,
)
from airflow_batchcode.hooks.lifecycle import (
    CREATED_KEY,
    UPLOADED_KEY,
    StateStore,
    raise_for_outcome,
    reusable,
    upload_url_expiry,
)
from airflow_batchcode.operation_ref import OperationRef, seal_upload, unseal_upload
from airflow_batchcode.realtime import code_chunk_in_realtime
from airflow_batchcode.services.base import AsyncBatchCodeClient, BatchCodeClient, Operation, OperationState
from airflow_batchcode.services.budget.window import utc
from airflow_batchcode.services.catalogue import DEFAULT_SERVICE, spec_for
from airflow_batchcode.services.http.settings import is_loopback
from airflow_batchcode.services.registry import ServiceConfig, build_async_client, build_client
from airflow_batchcode.staging import METADATA_FILE, OPERATION_FILE, Provenance
from airflow_batchcode.storage import as_storage_path, open_for_reading, write_atomically

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
    service = str(extra.get("service", DEFAULT_SERVICE)).lower()
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
    holds ``service`` (a name in :mod:`airflow_batchcode.services.catalogue`), and optionally
    ``topic``, ``auth_url``, ``rate_limit``, ``daily_quota``, ``quota_window``, ``budget_url``
    (the request budget, :mod:`airflow_batchcode.services.budget`), ``connect_timeout``, ``read_timeout``,
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

    async def aget_config(self) -> ServiceConfig:
        """The connection, read now without blocking the event loop (no object store: a trigger only polls)."""
        return service_config_from_connection(await self.aget_connection(self.batchcode_conn_id))

    async def get_async_client(self, config: ServiceConfig | None = None) -> AsyncBatchCodeClient:
        """An async client for the trigger, built without blocking the event loop.

        The connection is looked up asynchronously (unless ``config``, read by :meth:`aget_config`,
        is given); the client (whose HTTP pool loads TLS certificates, a blocking step) is
        constructed in a worker thread.
        """
        if config is None:
            config = await self.aget_config()
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

    def resolve_model(self, topic: str, model: str | None) -> str | None:
        """The model a run codes with: ``model`` when named, else the service's latest for ``topic``.

        Services whose catalogue spec says they list models (ABS: ``GET /v1/topics/{topic}/models``)
        are asked: a named model must be one of the topic's (a typo in the trigger form fails here,
        naming the models there are, not at create after the extract), and the latest is the one
        released last. ``None`` for a service that names no models.

        :raises ConfigurationError: the topic has no such model, or no models at all.
        """
        spec = spec_for(self.service)
        if not spec.lists_models:
            return model or None
        models = self.client.list_models(topic)  # type: ignore[attr-defined]  # the spec says it lists them
        if model:
            if any(m.model_id == model for m in models):
                return model
            known = "; ".join(f"{m.model_id} (version {m.model_version}, released {m.release_date})" for m in models)
            raise ConfigurationError(
                f"Model {model!r} is not a model of topic {topic!r} on the {spec.label} service, whose models "
                f"are: {known or 'none'}. Name one of them, or leave the model empty for the latest"
            )
        if not models:
            raise ConfigurationError(f"The {self.service} service lists no models for topic {topic!r}")
        latest = max(models, key=lambda m: (m.release_date, m.model_version))
        self.log.info(
            "Topic %s: coding with the latest model %s (version %s)", topic, latest.model_id, latest.model_version
        )
        return str(latest.model_id)

    def code_realtime(self, chunk: Chunk, topic: str, model: str | None) -> ChunkResult:
        """Code a chunk through the service's real-time endpoint (:mod:`airflow_batchcode.realtime`)."""
        spec = spec_for(self.service)
        if not spec.realtime_batch:
            raise ConfigurationError(f"The {self.service} service has no real-time coding")
        client: Any = self.client

        def code(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
            answers: list[dict[str, Any]] = client.code(topic, records, model=model)
            return answers

        return code_chunk_in_realtime(
            chunk, code, per_call=spec.realtime_batch, service=self.service, topic=topic, model=model
        )

    def request_usage(self, operation_ids: list[str]) -> dict[str, Any]:
        """What the connection's request budget says about a run of ``operation_ids``: the requests
        counted for them (one create each, plus every status, upload and download call; a per-process
        budget sees only this process's calls, a shared one every process's) and what is left in the
        quota window."""
        budget = getattr(self.client, "budget", None)
        if budget is None:
            return {}
        status = budget.status()
        return {
            "used": budget.requests_for(operation_ids) + len(operation_ids),
            "left_in_window": status.left,
            "window_resets": utc(status.reset),
            "shared": status.shared,
        }

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

    # the lifecycle of one operation -----------------------------------------------------------

    def create_or_reattach(
        self,
        topic: str,
        model: str | None = None,
        *,
        input_digest: str | None = None,
        manifest: Any = None,
        name: str | None = None,
        store: StateStore | None = None,
    ) -> OperationRef:
        """The operation an earlier try made for this input if it can still be used, else a new one.

        :param input_digest: a fingerprint of the manifest; only an operation made for the same one is reused.
        :param manifest: the manifest, for services that take their input with the create call.
        :param name: a stable name for the operation, where the service keeps one.
        :param store: where the created operation is recorded for a retry to find.
        :return: the operation, its upload URL sealed (Fernet) for the upload task.
        """
        stored = store.get(CREATED_KEY) if store is not None else None
        previous = reusable(stored, self.client, self.log, topic=topic, model=model, input_digest=input_digest)
        if previous is not None:
            return previous
        target = self._create(topic, model, manifest, name)
        ref = OperationRef(target.operation_id, topic, model, self.service, seal_upload(target))
        if store is not None:
            expires = upload_url_expiry(target.upload_url)
            store.set(CREATED_KEY, {**ref.to_xcom(), "upload_expires": expires, "input_digest": input_digest or None})
        self.log.info("Created %s operation %s (topic %s)", self.service, target.operation_id, topic)
        return ref

    def _create(self, topic: str, model: str | None, manifest: Any, name: str | None) -> Any:
        client = self.client
        if not client.input_with_create:
            return client.create_operation(topic, model)
        if manifest is None:
            raise ConfigurationError(
                f"The {self.service} service takes its input when the operation is created: "
                "pass manifest= to CreateOperationOperator"
            )
        with open_for_reading(manifest) as source:
            return client.create_operation(topic, model, manifest=source, name=name)

    def upload_once(self, ref: OperationRef, manifest: Any, *, store: StateStore | None = None) -> dict[str, Any]:
        """Stream ``manifest`` into the operation unless it already has its input (then a no-op).

        :return: ``{"operation_id", "bytes"}``, with ``"skipped": True`` when nothing was sent.
        """
        client = self.client
        topic = ref.require_topic()
        status = client.get_operation(ref.operation_id, topic, ref.model)
        if not status.state.accepts_input:
            return self._already_uploaded(ref, status.state, store)
        target = unseal_upload(ref)
        started = time.monotonic()
        try:
            with open_for_reading(manifest) as source:
                sent = client.upload_manifest(target, source)
        except UploadRejectedError as exc:
            after = client.get_operation(ref.operation_id, topic, ref.model)
            if after.state in (OperationState.IN_PROGRESS, OperationState.COMPLETE):
                self.log.info("Upload was refused but operation %s already has its input (%s)", ref.operation_id, exc)
                return self._already_uploaded(ref, after.state, store)
            raise
        seconds = time.monotonic() - started
        self.log.info(
            "Uploaded %s (%.1f MB) into operation %s in %.1f s (%.1f MB/s)",
            as_storage_path(manifest),
            sent / 1e6,
            ref.operation_id,
            seconds,
            sent / 1e6 / max(seconds, 1e-6),
        )
        if store is not None:
            store.set(UPLOADED_KEY, {"operation_id": ref.operation_id, "bytes": sent})
        return {"operation_id": ref.operation_id, "bytes": sent}

    def _already_uploaded(self, ref: OperationRef, state: OperationState, store: StateStore | None) -> dict[str, Any]:
        if state in (OperationState.FAILED, OperationState.TIMED_OUT):
            raise_for_outcome(state.value, ref.operation_id, None)
        if self.client.input_with_create:
            self.log.info(
                "Operation %s is %s: the %s service took its input with the create call; nothing to upload",
                ref.operation_id,
                state.value,
                self.service,
            )
        else:
            self.log.info(
                "Operation %s is %s: its manifest is already uploaded, not sending it again",
                ref.operation_id,
                state.value,
            )
        recorded = store.get(UPLOADED_KEY) if store is not None else None
        sent = recorded.get("bytes") if isinstance(recorded, dict) else None
        return {"operation_id": ref.operation_id, "bytes": sent, "skipped": True}

    def require_complete(self, ref: OperationRef) -> Operation:
        """A fresh status of a complete operation (fresh download URLs); the typed error otherwise."""
        operation = self.client.get_operation(ref.operation_id, ref.require_topic(), ref.model)
        if operation.state is not OperationState.COMPLETE:
            if operation.state.is_terminal():
                raise_for_outcome(operation.state.value, ref.operation_id, operation.error)
            raise UnexpectedResponseError(
                f"Operation {ref.operation_id} is {operation.state.value}: nothing to download yet "
                "(run the wait task first)"
            )
        return operation

    def download_to(self, ref: OperationRef, destination: Any) -> ChunkResult:
        """Download a complete operation's output and metadata into the folder ``destination``.

        Each file is put in place whole (a retry replaces, never appends); ``operation.json``
        (:class:`~airflow_batchcode.staging.Provenance`) is written last.
        """
        folder = as_storage_path(destination)
        client = self.client
        output, metadata = folder / client.output_name, folder / METADATA_FILE
        started = time.monotonic()
        self.require_complete(ref)
        sizes: tuple[int, int] = (0, 0)

        def fetch(output_sink: IO[bytes]) -> None:
            def fetch_both(metadata_sink: IO[bytes]) -> None:
                nonlocal sizes
                sizes = client.download_results(
                    ref.operation_id, ref.require_topic(), output_sink, metadata_sink, model=ref.model
                )

            write_atomically(metadata, fetch_both)

        try:
            write_atomically(output, fetch)
        except NotFoundError as exc:
            raise NotFoundError(
                "The operation's results are gone: the service deletes them some time after completion "
                "(ABS within 24 hours). Clear the whole chunk task group to code the chunk again",
                status_code=exc.status_code,
                service_message=exc.service_message,
                operation_id=ref.operation_id,
            ) from None
        self.log.info(
            "Downloaded operation %s: %s (%.1f MB) and %s in %.1f s",
            ref.operation_id,
            output,
            sizes[0] / 1e6,
            metadata,
            time.monotonic() - started,
        )
        provenance = Provenance(
            service=self.service,
            operation_id=ref.operation_id,
            topic=ref.topic,
            model=ref.model,
            output=client.output_name,
            output_bytes=sizes[0],
            downloaded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        write_atomically(folder / OPERATION_FILE, lambda sink: sink.write(provenance.to_json()))
        return ChunkResult(str(folder), provenance, sizes[1])
