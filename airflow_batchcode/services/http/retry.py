"""The retry engine: when to try a request again, and after how long.

Sans-IO: nothing here sends a request, sleeps or reads the clock on its own. A loop that sends
(the sync transport's, the async transport's, a client's create) starts each try with
:meth:`Attempts.start`, and after a failure asks :meth:`Attempts.after` what to do: a
:class:`Retry` (wait ``delay`` seconds, maybe refresh credentials first) or ``None`` (raise).

What makes an error worth another try is decided on the exception classes
(:attr:`~airflow_batchcode.exceptions.BatchCodeError.transient`), never here. This module adds
the policy around it:

* a transient error is retried while tries are left, after exponential backoff with jitter;
* the service's ``Retry-After`` is honoured, and one longer than we agree to wait fails at once;
* an answer that may have been lost (:attr:`~airflow_batchcode.exceptions.BatchCodeError.answer_lost`)
  ends a call that is not safe to repeat (``idempotent=False``): the service may have done it;
* a refused credential is refreshed and tried again once, when the caller can refresh it;
* an error another loop already gave up on (:attr:`~airflow_batchcode.exceptions.BatchCodeError.retries_spent`)
  is final: loops nest (an API call's try fetches a token through its own loop) and must not multiply.
  A loop of one try (``max_attempts=1``: the transport a create is sent through, inside the create's
  own loop) gives nothing up: its caller decides.

When a transient error is final, :attr:`Attempts.final_note` says why, for the error's message.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from airflow_batchcode.exceptions import AuthenticationError, ConfigurationError, ServiceError

Jitter = Callable[[float, float], float]
"""Draws a number between its two bounds (``random.uniform``; tests inject their own)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, honouring the server's ``Retry-After``.

    :param max_attempts: tries in all, the first included.
    :param backoff_base: seconds before the first retry (upper bound of its jitter).
    :param backoff_max: cap on one backoff.
    :param retry_after_max: longest ``Retry-After`` we agree to wait; longer ones fail fast.
    """

    max_attempts: int = 6
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    retry_after_max: float = 600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.backoff_base < 0 or self.backoff_max < 0 or self.retry_after_max < 0:
            raise ConfigurationError("backoff_base, backoff_max and retry_after_max must not be negative")

    def delay(self, attempt: int, retry_after: float | None = None, *, jitter: Jitter = random.uniform) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based).

        The backoff is drawn between half and all of ``backoff_base * 2 ** (attempt - 1)`` (capped
        at ``backoff_max``); a ``Retry-After`` replaces it (but never below a second's worth of backoff).
        """
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        backoff = jitter(ceiling / 2, ceiling)
        if retry_after is not None:
            return max(retry_after, min(backoff, 1.0))
        return backoff

    def can_retry(self, attempt: int, retry_after: float | None = None) -> bool:
        """Whether another try is allowed after try number ``attempt``."""
        if attempt >= self.max_attempts:
            return False
        return retry_after is None or retry_after <= self.retry_after_max

    def attempts(
        self, *, idempotent: bool = True, refresh_auth: bool = False, jitter: Jitter = random.uniform
    ) -> Attempts:
        """The tries of one call under this policy (see :class:`Attempts`)."""
        return Attempts(self, idempotent=idempotent, refresh_auth=refresh_auth, jitter=jitter)


@dataclass(frozen=True)
class Retry:
    """Try again after ``delay`` seconds; refresh the credentials first when ``refresh_auth``."""

    delay: float
    refresh_auth: bool = False

    def __post_init__(self) -> None:
        if self.delay < 0:
            raise ValueError(f"a retry delay cannot be negative, got {self.delay}")


class Attempts:
    """The tries of one call: counts them and says, after each failure, whether to try again.

    :param policy: how many tries, and how long to wait between them.
    :param idempotent: whether repeating the call is harmless. When it is not (a create the
        service has no idempotency key for), an error whose answer may have been lost is final.
    :param refresh_auth: whether the caller can refresh its credentials; if so the first
        :class:`~airflow_batchcode.exceptions.AuthenticationError` is retried at once, with
        ``refresh_auth`` set (and without counting against ``max_attempts``' backoff).
    :param jitter: draws the backoff between its bounds.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        idempotent: bool = True,
        refresh_auth: bool = False,
        jitter: Jitter = random.uniform,
    ) -> None:
        self.policy = policy
        self.idempotent = idempotent
        self.number = 0
        self.waited = 0.0
        """Seconds of backoff handed out so far."""
        self.final_note: str | None = None
        """Why the last :meth:`after` made a transient error final, for its message (``None``: nothing to add)."""
        self._can_refresh = refresh_auth
        self._jitter = jitter

    def start(self) -> int:
        """Count one more try; return its number (1-based)."""
        self.number += 1
        return self.number

    @property
    def spends(self) -> bool:
        """Whether an error this loop makes final is final for the loops around it too. Not for a loop of
        one try (the transport a create is sent through, inside the create's own loop): its caller decides."""
        return self.policy.max_attempts > 1

    def after(self, error: BaseException) -> Retry | None:
        """What to do now that the current try failed with ``error``: a :class:`Retry`, or ``None`` to raise it."""
        self.final_note = None
        if getattr(error, "retries_spent", False):
            return None
        if isinstance(error, AuthenticationError) and self._can_refresh:
            self._can_refresh = False
            return Retry(0.0, refresh_auth=True)
        if not getattr(error, "transient", False):
            return None
        if not self.idempotent and getattr(error, "answer_lost", False):
            return None
        retry_after = error.retry_after if isinstance(error, ServiceError) else None
        if not self.policy.can_retry(self.number, retry_after):
            if retry_after is not None and retry_after > self.policy.retry_after_max:
                self.final_note = (
                    f"not tried again: the service asked to wait {retry_after:.0f} s (Retry-After), "
                    f"longer than the {self.policy.retry_after_max:.0f} s a call waits"
                )
            elif self.number > 1:
                self.final_note = f"gave up after {self.number} tries and {self.waited:.0f} s of backoff"
            return None
        delay = self.policy.delay(self.number, retry_after, jitter=self._jitter)
        self.waited += delay
        return Retry(delay)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None`` if absent or bad.

    :param now: the current time, for an HTTP date (the clock when not given).
    """
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
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
