"""The service catalogue: every batch coding service this provider drives, described once.

Each service is a package ``services/<name>/`` whose ``spec.py`` defines ``SPEC``, a
:class:`ServiceSpec`. Everything that lists or picks services reads it: the client registry
(:mod:`airflow_batchcode.services.registry`), the provider info and its connection form, the
emulator server and CLI, the demo, and the pipeline (which asks the spec for the service's
normaliser and never compares service names). Adding a service means a new package with its
spec, and one line in :data:`SERVICES`.

Specs are light: they name their settings, clients, normaliser and emulator by import path, and
service packages export their names lazily (:mod:`airflow_batchcode.services.lazy`), so reading the
catalogue, as Airflow does in every process through the provider info, imports no HTTP stack and no
FastAPI. A client is imported when the first one is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from airflow_batchcode.exceptions import ConfigurationError

if TYPE_CHECKING:
    from airflow_batchcode.services.base import AsyncBatchCodeClient, BatchCodeClient, SecretCallback
    from airflow_batchcode.services.registry import ServiceConfig
    from airflow_batchcode.services.rules import InputRules

SERVICES = (
    "abs",
    "refinery",
    "superai",
    "gravity",
)
"""The catalogue, in the order services are listed everywhere: the one line a new service adds."""

DEFAULT_SERVICE = SERVICES[0]
"""The service of a connection (or of an operation written by an early release) that names none."""


@dataclass(frozen=True)
class ServiceSpec:
    """What the rest of the provider knows about one service.

    :param name: the connection's ``extra.service`` value and the package name under ``services/``.
    :param label: short name in messages (``"super.ai"``).
    :param doc_url: the service's public documentation.
    :param title: the integration's full name (``"ABS Occupation Coding Service"``); default: the label.
    :param classes: the prefix of the package's class names (``"SuperAi"``; default: the name
        capitalised, ``"Gravity"``): by convention the settings are
        ``services/<name>/settings.py:<classes>Settings`` and the clients
        ``services/<name>/client.py:<classes>Client`` and ``Async<classes>Client``.
    :param settings: ``"module:Class"`` of the service's settings (default: the convention above);
        ``Class.from_config(config)`` reads a connection.
    :param client: ``"module:Class"`` of the synchronous client (default: the convention), built
        from the settings (with the connection's ``object_store`` when ``object_storage``).
    :param async_client: ``"module:Class"`` of the async status client the trigger uses (default: the convention).
    :param normaliser: import path of the module that turns raw output into rows (default
        ``normalise/<name>.py``; :mod:`airflow_batchcode.normalise` describes its functions).
    :param emulator: ``"module:function"`` of the emulator app factory (``function(config) -> FastAPI``,
        with ``app.state.service``; default ``emulator/<name>_app.py:create_app``), or ``None`` when
        there is no emulator.
    :param connection_fields: the connection form's extras only this service reads (``conn-fields`` entries).
    :param emulator_connection: ``login``, ``password`` and ``extra`` a connection to the emulator
        with its default settings needs (the demo and tests use them).
    :param uses_login: whether the connection's login is read (an OAuth2 client id).
    :param object_storage: whether manifests are staged in object storage the service reads
        (the connection names ``manifest_location`` and ``storage_conn_id``).
    :param input_rules: ``"module:name"`` of the :class:`~airflow_batchcode.services.rules.InputRules`
        records must pass before they are sent; default UTF-8 text up to ``max_input_bytes``.
    :param max_input_bytes: the UTF-8 size limit of one record's texts, for the default rules
        (default 1 MiB: an assumption, for services whose documentation names no limit).
    :param column_limits: ``"module:name"`` of the :class:`~airflow_batchcode.columnar.rules.InputLimits`
        that mark, a column at a time, the records ``input_rules`` must look at (the columnar
        extract). Default: the UTF-8 limits of ``max_input_bytes`` where the default rules apply; a
        service with rules of its own and no limits keeps the DB-API extract.
    :param poll_interval: seconds between status polls when the DAG author names none: the service's advice.
    :param realtime_batch: the most records one call of the service's real-time (synchronous) coding
        takes; 0 when it has none.
    :param lists_models: whether the client lists a topic's models (``list_models``), so that a run
        without a model can name the latest one (the result cache's key needs it).
    :param cancel: whether a submitted operation can be cancelled: its clients then have
        ``cancel_batch(operation_id) -> int`` (the jobs cancelled), which a killed sensor or trigger calls.
    """

    name: str
    label: str
    doc_url: str
    title: str = ""
    classes: str = ""
    settings: str = ""
    client: str = ""
    async_client: str = ""
    normaliser: str = ""
    emulator: str | None = ""
    connection_fields: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    emulator_connection: Mapping[str, Any] = field(default_factory=dict)
    uses_login: bool = False
    object_storage: bool = False
    input_rules: str = ""
    max_input_bytes: int = 1024 * 1024
    column_limits: str = ""
    poll_interval: float = 60.0
    realtime_batch: int = 0
    lists_models: bool = False
    cancel: bool = False

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name != self.name.lower():
            raise ValueError(f"a service name is a lower-case identifier, got {self.name!r}")
        if not self.label:
            raise ValueError(f"service {self.name!r} needs a label")
        if self.classes == "":
            object.__setattr__(self, "classes", self.name.capitalize())
        package = f"airflow_batchcode.services.{self.name}"
        conventional = {
            "title": self.label,
            "settings": f"{package}.settings:{self.classes}Settings",
            "client": f"{package}.client:{self.classes}Client",
            "async_client": f"{package}.client:Async{self.classes}Client",
            "normaliser": f"airflow_batchcode.normalise.{self.name}",
            "emulator": f"airflow_batchcode.emulator.{self.name}_app:create_app",
        }
        for what, default in conventional.items():
            if getattr(self, what) == "":
                object.__setattr__(self, what, default)
        for what in ("settings", "client", "async_client", "emulator"):
            value = getattr(self, what)
            if value is not None and ":" not in value:
                raise ValueError(f"service {self.name!r}: {what} must be 'module:name', got {value!r}")

    def build_client(self, config: ServiceConfig, on_secret: SecretCallback | None = None) -> BatchCodeClient:
        """A synchronous client for ``config``."""
        store = {"object_store": config.object_store} if self.object_storage else {}
        client: BatchCodeClient = _load(self.client)(self._settings(config), on_secret=on_secret, **store)
        return client

    def build_async_client(
        self, config: ServiceConfig, on_secret: SecretCallback | None = None
    ) -> AsyncBatchCodeClient:
        """An async status client for ``config``."""
        client: AsyncBatchCodeClient = _load(self.async_client)(self._settings(config), on_secret=on_secret)
        return client

    def _settings(self, config: ServiceConfig) -> Any:
        return _load(self.settings).from_config(config)

    def rules(self) -> InputRules:
        """The input rules of this service (:mod:`airflow_batchcode.services.rules`)."""
        from airflow_batchcode.services.rules import utf8_rules

        if self.input_rules:
            rules: InputRules = _load(self.input_rules)
            return rules
        return utf8_rules(self.max_input_bytes)

    def limits(self) -> Any:
        """The input rules' vectorised limits (imported now: pyarrow), or ``None`` when they have none."""
        if self.column_limits:
            return _load(self.column_limits)
        if self.input_rules:
            return None
        from airflow_batchcode.columnar.rules import utf8_limits

        return utf8_limits(self.max_input_bytes)

    def emulator_factory(self) -> Callable[..., Any]:
        """The emulator's app factory, imported now (it needs the emulator's optional dependencies)."""
        if self.emulator is None:
            raise ConfigurationError(f"There is no emulator of the {self.label} service")
        factory: Callable[..., Any] = _load(self.emulator)
        return factory


def _load(reference: str) -> Any:
    """The object a ``"module:name"`` reference names."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def form_field(label: str, description: str | None = None, kind: str = "string", default: Any = None) -> dict[str, Any]:
    """One connection-form extra (a ``conn-fields`` entry of the provider info) holding a ``kind`` or nothing."""
    entry: dict[str, Any] = {"label": label}
    if description is not None:
        entry["description"] = description
    entry["schema"] = {"type": [kind, "null"]} if default is None else {"type": [kind, "null"], "default": default}
    return entry


@cache
def spec_for(service: str) -> ServiceSpec:
    """The spec of ``service``; a clear error names the supported ones."""
    if service not in SERVICES:
        raise ConfigurationError(f"Unknown batch coding service {service!r}; supported: {', '.join(SERVICES)}")
    spec: ServiceSpec = importlib.import_module(f"airflow_batchcode.services.{service}.spec").SPEC
    if spec.name != service:
        raise ConfigurationError(f"services/{service}/spec.py describes {spec.name!r}")
    return spec


def all_specs() -> tuple[ServiceSpec, ...]:
    """Every service's spec, in catalogue order."""
    return tuple(spec_for(name) for name in SERVICES)
