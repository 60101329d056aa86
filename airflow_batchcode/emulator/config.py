"""Every setting of the ABS emulator, with the defaults of the real service where it has one."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from airflow_batchcode.emulator.faults import FaultSettings, settings_from

GIB = 1024**3


def _default_clients() -> dict[str, str]:
    return {"demo-client": "demo-secret"}


def _default_api_keys() -> dict[str, str]:
    return {"demo-key": "demo-tenant", "other-key": "other-tenant"}


@dataclass
class EmulatorConfig(FaultSettings):
    """Settings of one emulator instance; each field has a ``--flag`` of the same name in the CLI.

    Times are in seconds, rates are probabilities per request (0.0 = never). The ``fault_*``
    fields come from :class:`~airflow_batchcode.emulator.faults.FaultSettings`.

    :param clients: OAuth2 client id → client secret.
    :param token_ttl: lifetime of an access token (``expires_in``).
    :param token_limit: token requests per client per hour before 403; 0 = unlimited.
    :param rate_limit: API requests per second per client (token bucket, burst 1); 0 = off.
    :param daily_quota: API requests per client per quota window; 0 = off.
    :param quota_window: the quota window in seconds (a day: UTC days; shorter: multiples since the epoch).
    :param url_ttl: lifetime of presigned storage URLs.
    :param awaiting_timeout: time an operation waits for its upload before ``timed_out``.
    :param processing_delay: minimum time an operation stays ``in_progress``.
    :param retention: time after completion before the output files are deleted.
    :param max_upload_bytes: largest accepted input file.
    :param data_dir: where files are kept; ``None`` = a fresh temporary directory deleted on close.
    :param public_url: origin put into presigned URLs; ``None`` = the origin the client called.
    :param seed: seed of the fault injector's random generator.
    :param api_keys: API key → tenant, for the API-key services (Refinery, super.ai, Gravity).
    :param record_failure_rate: share of records the service fails on its own (a per-record error
        in the output, the rest of the job completes), chosen by a hash of the record: partial failures.
    :param reorder_output_rate: share of ABS operations whose output file lists its lines out of
        input order (chosen by a hash of the seed and the operation id; the lines are shuffled).
    :param s3_endpoint_url: S3-compatible endpoint the emulator reads manifests from and delivers
        results to (Refinery, super.ai input files); ``None`` = AWS.
    """

    clients: dict[str, str] = field(default_factory=_default_clients)
    token_ttl: float = 3600.0
    token_limit: int = 0
    rate_limit: float = 1.0
    daily_quota: int = 10000
    quota_window: float = 86400.0
    url_ttl: int = 3600
    awaiting_timeout: float = 3600.0
    processing_delay: float = 2.0
    retention: float = 86400.0
    max_upload_bytes: int = 5 * GIB
    data_dir: Path | None = None
    public_url: str | None = None
    seed: int = 0
    processing_workers: int = 2
    api_keys: dict[str, str] = field(default_factory=_default_api_keys)
    record_failure_rate: float = 0.0
    reorder_output_rate: float = 0.0
    s3_endpoint_url: str | None = None

    def fault_settings(self) -> dict[str, Any]:
        """The fault fields as a plain dict (what ``GET /_emulator/faults`` returns)."""
        return asdict(settings_from(self))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of every setting, in declaration order."""
        return tuple(f.name for f in fields(cls))
