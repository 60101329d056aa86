"""What a connection's request budget is configured with (connection extras ``rate_limit``,
``daily_quota``, ``quota_window``, ``budget_url`` and ``budget_prefix``)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.services.budget.window import DAY, QuotaWindow

SPACING_MARGIN = 0.1
"""Requests are spaced this share more than ``1 / rate`` apart: a caller that wakes up a little late
then still arrives after the service's bucket has refilled for it."""
LATE_SHARE = 0.5
"""A caller that wakes more than this share of the spacing margin after its slot (measured from the
ledger's answer) gives the slot up and asks for another: sent that late, its request would arrive
too close to the next one granted."""
LATE_FLOOR = 0.01
"""...but never for less than this many seconds: at high rates the margin is shorter than a sleep's
usual jitter, and such services take bursts."""
RESERVE_SHARE = 0.1
"""Share of each window's quota that status polls leave to creates, uploads and downloads."""


@dataclass(frozen=True)
class QuotaSettings:
    """The per-window quota of a connection and where its budget is kept.

    :param daily_quota: requests per window; ``None`` takes the service's default, 0 means no quota.
    :param quota_window: the window's length in seconds (default a day).
    :param budget_url: ``redis://host:port/db`` to share the budget across processes; ``None``
        keeps it per process (hidden from ``repr``: it may carry a password).
    :param budget_prefix: the Redis key prefix (tests give each run its own).
    """

    daily_quota: int | None = None
    quota_window: float = DAY
    budget_url: str | None = field(default=None, repr=False)
    budget_prefix: str = "batchcode:budget"

    def __post_init__(self) -> None:
        if self.daily_quota is not None and self.daily_quota < 0:
            raise ConfigurationError(f"daily_quota must not be negative, got {self.daily_quota}")
        QuotaWindow(self.quota_window)
        if self.budget_url and urlsplit(self.budget_url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError("budget_url must be a redis://, rediss:// or unix:// URL")


@dataclass(frozen=True)
class BudgetSettings:
    """One connection's budget: a rate per second and a quota per window.

    :param key: what identifies the service account (service, origin, client id or key digest).
    :param rate: requests per second (0: no rate limit).
    :param quota: requests per window (0: no quota).
    :param window: the quota's counting window.
    :param url: the Redis URL of a budget shared across processes, or ``None`` (hidden from ``repr``).
    :param prefix: the Redis key prefix.
    """

    key: str
    rate: float = 0.0
    quota: int = 0
    window: QuotaWindow = field(default_factory=QuotaWindow)
    url: str | None = field(default=None, repr=False)
    prefix: str = "batchcode:budget"

    def __post_init__(self) -> None:
        if self.rate < 0 or self.quota < 0:
            raise ConfigurationError(f"rate_limit and daily_quota must not be negative ({self.rate}, {self.quota})")

    @classmethod
    def of(cls, key: str, rate: float, quota: QuotaSettings, *, default_quota: int = 0) -> BudgetSettings:
        """The budget of account ``key`` from its rate and quota settings (``default_quota`` when none is set)."""
        return cls(
            key=key,
            rate=rate,
            quota=default_quota if quota.daily_quota is None else quota.daily_quota,
            window=QuotaWindow(quota.quota_window),
            url=quota.budget_url,
            prefix=quota.budget_prefix,
        )

    @property
    def interval(self) -> float:
        """Seconds between two granted requests (0: no rate limit)."""
        return (1.0 + SPACING_MARGIN) / self.rate if self.rate > 0 else 0.0

    @property
    def lateness_allowed(self) -> float:
        """Seconds a granted request may be sent after its slot and still keep the rate."""
        return max(LATE_FLOOR, LATE_SHARE * SPACING_MARGIN / self.rate) if self.rate > 0 else float("inf")

    @property
    def reserve(self) -> int:
        """Requests of each window that status polls leave to creates, uploads and downloads."""
        if self.quota <= 1:
            return 0
        return min(self.quota - 1, max(1, math.ceil(self.quota * RESERVE_SHARE)))

    @property
    def redis_key(self) -> str:
        """The Redis key prefix of this account (the account as a digest: it may hold a client id)."""
        return f"{self.prefix}:{hashlib.sha256(self.key.encode()).hexdigest()[:16]}"
