"""What a Gravity client is configured with: the API key, the project version and the column mappings."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.services.apikey import ApiKeyOrigin
from airflow_batchcode.services.http.settings import HttpSettings
from airflow_batchcode.services.registry import ServiceConfig

SERVICE = "gravity"

DEFAULT_BASE_URL = "https://on-demand.gravity-ai.com"

DEFAULT_RATE_LIMIT = 5.0


@dataclass(frozen=True)
class ColumnMapping:
    """One entry of Gravity's ``mapping`` / ``outputMapping``: rename ``source`` to ``destination``.

    :param default_value: the value used when the source is empty (``None`` sends no default).
    """

    source: str
    destination: str
    default_value: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"source": self.source, "destination": self.destination, "defaultValue": self.default_value}


DEFAULT_MAPPING = (
    ColumnMapping("occp_text", "job_title", ""),
    ColumnMapping("tasks_text", "duties", ""),
)
"""The input mapping sent when the connection names none: the canonical fields to the model's features."""


def parse_mapping(value: Any, what: str) -> tuple[ColumnMapping, ...] | None:
    """Read a mapping setting: ``None``, a list of ``{source, destination, defaultValue?}``, a
    ``{source: destination}`` object, or either as JSON text."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigurationError(f"{what} must be JSON: a list of {{source, destination}} objects") from None
    if isinstance(value, dict):
        value = [{"source": k, "destination": v} for k, v in value.items()]
    if not isinstance(value, list | tuple):
        raise ConfigurationError(f"{what} must be a list of {{source, destination, defaultValue}} objects")
    entries = []
    for index, item in enumerate(value):
        if isinstance(item, ColumnMapping):
            entries.append(item)
            continue
        source = item.get("source") if isinstance(item, dict) else None
        destination = item.get("destination") if isinstance(item, dict) else None
        if not isinstance(source, str) or not source or not isinstance(destination, str) or not destination:
            raise ConfigurationError(f"{what} entry {index} needs a non-empty source and destination")
        default = item.get("defaultValue")
        entries.append(ColumnMapping(source, destination, None if default is None else str(default)))
    return tuple(entries)


@dataclass(frozen=True)
class GravitySettings(ApiKeyOrigin):
    """What a Gravity client needs to know.

    :param base_url: API origin (``https://on-demand.gravity-ai.com``).
    :param api_key: the ``X-Api-Key`` value (hidden from ``repr``).
    :param version: project version to run; ``None`` = the latest active one.
    :param mapping: input column mapping; ``None`` sends none.
    :param output_mapping: output column mapping; ``None`` sends none.
    :param rate_limit: API requests per second for this key in this process (0 disables it).
    :param http: timeouts, retries and URL rules.
    """

    service = SERVICE
    label = "Gravity"
    base_url: str = DEFAULT_BASE_URL
    api_key: str = field(default="", repr=False)
    version: str | None = None
    mapping: tuple[ColumnMapping, ...] | None = DEFAULT_MAPPING
    output_mapping: tuple[ColumnMapping, ...] | None = None
    rate_limit: float = DEFAULT_RATE_LIMIT
    http: HttpSettings = field(default_factory=HttpSettings)

    def __post_init__(self) -> None:
        self.check_connection("Gravity needs an API key (the connection's password)")

    @classmethod
    def from_config(cls, config: ServiceConfig) -> GravitySettings:
        """Settings from a connection: the password is the API key; extras ``version``, ``mapping``,
        ``output_mapping`` and ``rate_limit``.

        :raises ConfigurationError: the connection points at Gravity's own service without a ``mapping``:
            its model's feature names are not the emulated model's ``job_title`` and ``duties``.
        """
        extra = config.extra
        base_url = config.base_url or DEFAULT_BASE_URL
        if "mapping" in extra:
            mapping = parse_mapping(extra["mapping"], "mapping")
        elif hosted_by_gravity(base_url):
            raise ConfigurationError(
                "Gravity needs the connection extra 'mapping': the input columns occp_text and tasks_text (and "
                "line, record_id) renamed to your model's feature names, e.g. "
                '[{"source": "occp_text", "destination": "<title feature>"}, '
                '{"source": "tasks_text", "destination": "<duties feature>"}]; '
                "without one only the emulated model's names (job_title, duties) are known"
            )
        else:
            mapping = DEFAULT_MAPPING
        return cls(
            base_url=base_url,
            api_key=config.password,
            version=config.text("version"),
            mapping=mapping,
            output_mapping=parse_mapping(extra.get("output_mapping"), "output_mapping"),
            rate_limit=config.number("rate_limit", DEFAULT_RATE_LIMIT),
            http=config.http_settings(),
        )


def hosted_by_gravity(base_url: str) -> bool:
    """Whether ``base_url`` is Gravity's own service (whose models are not the emulated one)."""
    host = (urlsplit(base_url).hostname or "").lower()
    return host == "gravity-ai.com" or host.endswith(".gravity-ai.com")
