"""Every setting of the ABS emulator, with the defaults of the real service where it has one."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from airflow_batchcode.emulator.faults import FaultSettings, settings_from
from airflow_batchcode.emulator.flags import API_KEYS, AUTH, FAULTS, STORAGE, parse_size, setting

GIB = 1024**3


def _default_clients() -> dict[str, str]:
    return {"demo-client": "demo-secret"}


def _default_api_keys() -> dict[str, str]:
    return {"demo-key": "demo-tenant", "other-key": "other-tenant"}


@dataclass
class EmulatorConfig(FaultSettings):
    """Settings of one emulator instance; each field has a ``--flag`` of the same name in the CLI
    (:mod:`airflow_batchcode.emulator.flags`: ``clients`` and ``api_keys`` are ``--client`` and ``--api-key``).

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
    token_ttl: float = setting(3600.0, "access token lifetime (s)", group=AUTH)
    token_limit: int = setting(0, "tokens per client per hour (0 = no limit)", group=AUTH)
    rate_limit: float = setting(1.0, "API requests/s per client (0 = off)", group=AUTH)
    daily_quota: int = setting(10000, "API requests per client per day (0 = off)", group=AUTH)
    quota_window: float = setting(86400.0, "quota window (s; 86400 = UTC days)", group=AUTH)
    url_ttl: int = setting(3600, "presigned URL lifetime (s)", group=STORAGE)
    awaiting_timeout: float = setting(3600.0, "wait for input (s)", group=STORAGE)
    processing_delay: float = setting(2.0, "minimum in_progress (s)", group=STORAGE)
    retention: float = setting(86400.0, "output kept after completion (s)", group=STORAGE)
    max_upload_bytes: int = setting(5 * GIB, "largest input file", group=STORAGE, parse=parse_size)
    data_dir: Path | None = setting(
        None, "keep files here (default: a temporary dir, deleted on exit)", group=STORAGE, parse=Path
    )
    public_url: str | None = setting(None, "origin put into presigned URLs (default: as called)", group=STORAGE)
    seed: int = setting(0, "random seed of the fault injector", group=FAULTS)
    processing_workers: int = setting(2, "coding threads", group=STORAGE)
    api_keys: dict[str, str] = field(default_factory=_default_api_keys)
    record_failure_rate: float = setting(
        0.0, "share of records the service fails on its own (partial failures)", group=API_KEYS
    )
    reorder_output_rate: float = setting(
        0.0, "share of ABS operations whose output lines come out of input order", group=FAULTS
    )
    s3_endpoint_url: str | None = setting(
        None, "S3-compatible endpoint for manifests and delivery (default: AWS)", group=API_KEYS
    )

    def fault_settings(self) -> dict[str, Any]:
        """The fault fields as a plain dict (what ``GET /_emulator/faults`` returns)."""
        return asdict(settings_from(self))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of every setting, in declaration order."""
        return tuple(f.name for f in fields(cls))
