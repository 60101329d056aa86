"""When and how long to wait before trying a request again."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, honouring the server's ``Retry-After``.

    :param max_attempts: tries in all, the first included.
    :param backoff_base: seconds before the first retry (upper bound of its jitter).
    :param backoff_max: cap on one backoff.
    :param retry_after_max: longest ``Retry-After`` we agree to wait; longer ones fail fast.
    """

    max_attempts: int = 6
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    retry_after_max: float = 600.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        backoff = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            return max(retry_after, min(backoff, 1.0))
        return backoff

    def can_retry(self, attempt: int, retry_after: float | None = None) -> bool:
        """Whether another try is allowed after try number ``attempt``."""
        if attempt >= self.max_attempts:
            return False
        return retry_after is None or retry_after <= self.retry_after_max


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None`` if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
