"""What every emulated service's state shares, and the request reading every emulator does.

:class:`EmulatedService` holds the adjustable clock, the fault injector, the counters behind
``GET /_emulator/stats``, the lock and the worker pool, and a data directory when the service keeps
files. :func:`read_limited` and :func:`json_body` read request bodies without trusting their size
or shape.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import msgspec
from starlette.requests import Request

from airflow_batchcode.emulator.config import EmulatorConfig
from airflow_batchcode.emulator.contract import MSG_BAD_BODY, ApiError
from airflow_batchcode.emulator.faults import FaultInjector, settings_from

T = TypeVar("T")

_decode = msgspec.json.decode


class Clock:
    """Wall time plus an offset that tests move forward with ``POST /_emulator/clock``."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        """Current emulator time, seconds since the epoch."""
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset += seconds


class CallPeaks:
    """The most API calls of each caller in one second and in one quota window, for the stats.

    Every call that passed authentication counts, whether the rate limit or the quota let it
    through or not, so a client's own pacing can be checked against the service's limits. Seconds
    and windows are the ones the limits count in: whole seconds, and multiples of the window's
    length since the epoch (UTC days for a day).

    :param window: the quota window in seconds.
    """

    def __init__(self, window: float) -> None:
        self.spans = {"second": 1.0, "window": max(1.0, window)}
        self.busiest: dict[str, Counter[str]] = {span: Counter() for span in self.spans}
        self._current: dict[tuple[str, str], tuple[int, int]] = {}

    def count(self, who: str, now: float) -> None:
        """Count one call of ``who`` at ``now`` (epoch seconds)."""
        for span, length in self.spans.items():
            slot = int(now // length)
            seen, calls = self._current.get((span, who), (slot, 0))
            calls = calls + 1 if seen == slot else 1
            self._current[(span, who)] = (slot, calls)
            if calls > self.busiest[span][who]:
                self.busiest[span][who] = calls

    def stats(self) -> dict[str, dict[str, int]]:
        """``calls_busiest_second`` and ``calls_busiest_window``: caller → the most calls in one."""
        return {f"calls_busiest_{span}": dict(counter) for span, counter in self.busiest.items()}


class EmulatedService:
    """The state every emulated service starts from. Request handlers run on the event loop; work runs
    on :attr:`_pool` and touches shared state only under :attr:`lock`.

    :param config: the emulator's settings.
    """

    name: ClassVar[str]
    """Short name, for worker threads and temporary directories."""
    counter_names: ClassVar[tuple[str, ...]]
    """The counters shown by ``GET /_emulator/stats``, each by tenant, client or outcome."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.clock = Clock()
        self.faults = FaultInjector(settings_from(config), seed=config.seed)
        self.lock = threading.Lock()
        self.counters: dict[str, Counter[str]] = {name: Counter() for name in self.counter_names}
        self._cancelled = threading.Event()
        self._pool = ThreadPoolExecutor(max(1, config.processing_workers), thread_name_prefix=f"{self.name}-emulator")
        self._own_dir: Path | None = None
        self._quota: dict[str, tuple[int, int]] = {}
        self.peaks = CallPeaks(config.quota_window)

    @property
    def owns_data_dir(self) -> bool:
        """Whether the data directory is a temporary one, deleted on :meth:`close`."""
        return self._own_dir is not None

    def _data_dir(self, subfolder: str | None = None) -> Path:
        """``config.data_dir`` (or its ``subfolder``), made if missing; a fresh temporary directory when
        the config names none."""
        if self.config.data_dir is None:
            self._own_dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-emulator-"))
            return self._own_dir
        folder = Path(self.config.data_dir) / subfolder if subfolder else Path(self.config.data_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def close(self) -> None:
        """Stop the workers and delete the data directory if the service created it."""
        self._cancelled.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)

    def spend_quota(self, who: str, now: float, refused: Exception) -> None:
        """Count one API request of ``who`` against ``config.daily_quota`` (per ``quota_window``, 0 = none);
        ``refused`` is raised (and counted as ``throttled``) once the window's quota is spent. Call it after
        :meth:`count_call`."""
        if self.config.daily_quota <= 0:
            return
        day = int(now // max(1.0, self.config.quota_window))
        seen, used = self._quota.get(who, (day, 0))
        used = used if seen == day else 0
        if used >= self.config.daily_quota:
            self.counters["throttled"]["daily_quota"] += 1
            raise refused
        self._quota[who] = (day, used + 1)

    def count_call(self, who: str, now: float) -> None:
        """Count one authenticated API call of ``who`` in the busiest-second and busiest-window figures of
        the stats (before the rate limit and the quota decide on it)."""
        self.peaks.count(who, now)

    def tally(self, items: Iterable[T], state: Callable[[T], str]) -> Counter[str]:
        """How many of ``items`` (read under the lock) are in each ``state`` now."""
        with self.lock:
            snapshot = list(items)
        return Counter(state(item) for item in snapshot)

    def figures(self) -> dict[str, Any]:
        """What the service adds to its counters in the stats (e.g. objects by state)."""
        return {}

    def stats(self) -> dict[str, Any]:
        """Counters for ``GET /_emulator/stats``: every counter, the busiest second and quota window of each
        caller (:class:`CallPeaks`), the service's figures, the faults (and the lost responses by route), the
        clock."""
        counted: dict[str, Any] = {name: dict(counter) for name, counter in self.counters.items()}
        return {
            **counted,
            **self.peaks.stats(),
            **self.figures(),
            "faults": dict(self.faults.injected),
            "lost_responses": dict(self.faults.lost_on),
            "clock_offset": self.clock.offset,
        }


def _bad_body(size: int) -> Exception:
    return ApiError(400, MSG_BAD_BODY)


async def read_limited(
    request: Request, limit: int, too_large: Callable[[int], Exception] = _bad_body, *, drain: int = 0
) -> bytes:
    """The request body; past ``limit`` bytes ``too_large(size)`` is raised (a 400 by default).

    :param drain: read (and drop) an oversized body up to this many bytes before answering, so the
        client gets the answer instead of a reset connection; a larger announced body is refused at once.
    """
    declared = request.headers.get("content-length", "")
    if drain and declared.isdigit() and int(declared) > drain:
        raise too_large(int(declared))
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max(limit, drain):
            raise too_large(size)
        if size <= limit:
            parts.append(chunk)
    if size > limit:
        raise too_large(size)
    return b"".join(parts)


def json_body(raw: bytes, not_json: Exception, not_object: Exception | None = None) -> Any:
    """``raw`` decoded as JSON; ``not_json`` is raised when it is not, ``not_object`` (when given) when
    it is not a JSON object."""
    try:
        data = _decode(raw)
    except (msgspec.DecodeError, RecursionError):
        raise not_json from None
    if not_object is not None and not isinstance(data, dict):
        raise not_object
    return data
