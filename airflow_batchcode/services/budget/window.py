"""Quota windows: when the window holding a moment starts, and when it resets.

A window of a day or longer starts at UTC midnight (a window of ``n`` whole days starts on the
days since the epoch that are multiples of ``n``); a shorter window starts at multiples of its
length since the epoch. The service counts the same way, so both sides agree on the reset.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from airflow_batchcode.exceptions import ConfigurationError

DAY = 86400.0
BOUNDARY_GUARD = 0.5
"""Seconds before a window's reset in which no request is sent (a tenth of shorter windows)."""


@dataclass(frozen=True)
class QuotaWindow:
    """A fixed, epoch-aligned counting window.

    :param seconds: its length (at least one second; a day or longer is rounded down to whole days).
    """

    seconds: float = DAY

    def __post_init__(self) -> None:
        if not self.seconds >= 1:
            raise ConfigurationError(f"quota_window must be at least 1 second, got {self.seconds!r}")

    @property
    def length(self) -> float:
        """The window's length in seconds, whole days when it is a day or longer."""
        if self.seconds >= DAY:
            return DAY * (self.seconds // DAY)
        return float(self.seconds)

    def start(self, now: float) -> float:
        """Epoch seconds at which the window holding ``now`` started."""
        return (now // self.length) * self.length

    def reset(self, now: float) -> float:
        """Epoch seconds at which the window holding ``now`` ends and a fresh one starts."""
        return self.start(now) + self.length

    @property
    def guard(self) -> float:
        """Seconds before a reset in which no request is sent (see :meth:`clear_of_reset`)."""
        return min(BOUNDARY_GUARD, self.length / 10)

    def clear_of_reset(self, when: float) -> float:
        """``when``, or just after the next reset when ``when`` falls in the guard before it: a request
        sent a moment before a reset may arrive after it, and would count in the other window there."""
        reset = self.reset(when)
        return reset + self.guard / 2 if reset - when < self.guard else when


def utc(epoch: float) -> str:
    """``epoch`` as ``YYYY-MM-DD HH:MM:SS UTC``, for log lines."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))
