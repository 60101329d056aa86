"""The request budget: rate and quota window, per process or shared in Redis, and the poll planner."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from airflow_batchcode.exceptions import ConfigurationError, QuotaExceededError
from airflow_batchcode.services.budget import Budget, BudgetSettings, BudgetStatus, QuotaWindow, budget_for
from airflow_batchcode.services.budget.ledger import LocalLedger
from airflow_batchcode.services.budget.planner import plan_poll
from airflow_batchcode.services.budget.settings import QuotaSettings
from airflow_batchcode.services.http.errors import json_message_reader
from airflow_batchcode.services.http.retry import RetryPolicy
from airflow_batchcode.services.http.settings import HttpSettings
from airflow_batchcode.services.http.sync import SyncTransport
from airflow_batchcode.services.registry import ServiceConfig, build_client


def settings(**kwargs: Any) -> BudgetSettings:
    return BudgetSettings(key=f"test:{uuid.uuid4().hex}", **kwargs)


# --- the window -----------------------------------------------------------------------------------


def test_a_day_window_starts_at_utc_midnight_and_shorter_ones_at_multiples_of_their_length() -> None:
    noon = datetime(2026, 12, 4, 12, 30, tzinfo=UTC).timestamp()
    day = QuotaWindow()
    assert datetime.fromtimestamp(day.start(noon), UTC) == datetime(2026, 12, 4, tzinfo=UTC)
    assert datetime.fromtimestamp(day.reset(noon), UTC) == datetime(2026, 12, 5, tzinfo=UTC)
    assert QuotaWindow(30).start(noon + 47) == noon + 30
    assert QuotaWindow(30).reset(noon + 47) == noon + 60
    two_days = QuotaWindow(2 * 86400 + 5)
    assert two_days.length == 2 * 86400 and two_days.start(noon) % 86400 == 0
    with pytest.raises(ConfigurationError):
        QuotaWindow(0)


def test_no_request_is_sent_just_before_a_reset_where_it_could_arrive_in_the_next_window() -> None:
    window = QuotaWindow(30)
    assert window.clear_of_reset(3010.0) == 3010.0
    assert window.clear_of_reset(3029.8) == 3030.25, "moved just past the reset, and counted there"
    ledger = LocalLedger(settings(quota=2, window=window))
    assert ledger.take(3029.9, poll=False).delay == pytest.approx(0.35)
    assert ledger.peek(3030.5) == (1, 3060.0)


# --- the per-process ledger -----------------------------------------------------------------------


def test_the_ledger_counts_per_window_and_keeps_a_reserve_from_polls() -> None:
    ledger = LocalLedger(settings(quota=10, window=QuotaWindow(30)))
    now = 3000.0  # a window start
    assert ledger.settings.reserve == 1
    polls = [ledger.take(now, poll=True) for _ in range(10)]
    assert [g.granted for g in polls] == [True] * 9 + [False]
    assert polls[-1].reason == "reserve" and polls[-1].delay == 30.0 and polls[-1].reset == 3030.0
    create = ledger.take(now + 1, poll=False)
    assert create.granted and create.used == 10, "the reserve is there for creates, uploads and downloads"
    spent = ledger.take(now + 2, poll=False)
    assert (spent.granted, spent.reason, spent.delay) == (False, "quota", 28.0)
    assert ledger.take(now + 30, poll=True).granted, "a new window starts with the whole quota"
    assert ledger.peek(now + 30) == (1, 3060.0)


def test_the_ledger_holds_every_request_while_told_to() -> None:
    ledger = LocalLedger(settings(rate=1000.0))
    ledger.hold(5000.0)
    refused = ledger.take(4999.0, poll=False)
    assert (refused.granted, refused.reason, refused.delay) == (False, "hold", 1.0)
    assert ledger.take(5000.0, poll=False).granted


# --- the budget -----------------------------------------------------------------------------------


def test_the_budget_spaces_requests_and_is_shared_per_account() -> None:
    budget = Budget(settings(rate=20.0))
    start = time.monotonic()
    for _ in range(5):
        budget.acquire()
    assert time.monotonic() - start >= 0.19
    assert budget.made == 5
    shared = settings(rate=2.0)
    assert budget_for(shared) is budget_for(shared)
    changed = BudgetSettings(key=shared.key, rate=3.0)
    assert budget_for(changed).rate == 3.0, "a changed connection takes effect without a restart"
    assert not Budget(settings()).limited


def test_the_budget_waits_asynchronously_without_blocking_the_loop() -> None:
    budget = Budget(settings(rate=10.0))

    async def main() -> tuple[float, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        start = time.monotonic()
        await asyncio.gather(*(budget.acquire_async(poll=True) for _ in range(4)))
        task.cancel()
        return time.monotonic() - start, ticks

    elapsed, ticks = asyncio.run(main())
    assert elapsed >= 0.29
    assert ticks >= 15, "the event loop kept running while callers waited"


def test_a_caller_woken_late_for_its_slot_asks_for_another_instead_of_crowding_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limits = settings(rate=5.0)  # slots 0.22 s apart; the service refuses two requests < 0.2 s apart
    budget = Budget(limits)
    sleep = time.sleep
    overslept: list[str] = []

    def late_waker(seconds: float) -> None:
        """The ``late`` thread's first sleep overshoots by 0.1 s, as on a busy machine."""
        name = threading.current_thread().name
        sleep(seconds + (0.1 if name == "late" and not overslept else 0.0))
        if name == "late":
            overslept.append(name)

    monkeypatch.setattr(time, "sleep", late_waker)
    sent: dict[str, float] = {}

    def send(name: str) -> None:
        budget.acquire(operation=name)
        sent[name] = time.monotonic()

    send("first")
    late = threading.Thread(target=send, args=("late",), name="late")
    late.start()  # granted the slot 0.22 s after the first, and woken 0.1 s after it
    sleep(0.03)
    send("next")  # granted the slot after that
    late.join()
    assert overslept, "the late caller slept for its slot"
    assert sent["late"] - sent["next"] >= 0.2, "the late caller took the slot after the next one"
    assert budget.made == 3, "three requests were sent"
    assert budget.status().used == 4, "the window keeps the slot given up (an overcount only ever sends less)"
    assert budget.requests_for(["first", "late", "next"]) == 3, "each request counted once for its operation"

    on_time = Budget(settings(rate=5.0))
    on_time.acquire()
    on_time.acquire()
    assert (on_time.made, on_time.status().used) == (2, 2)


class _SlowToAnswer(LocalLedger):
    """A ledger that answers 0.1 s after it is asked (a thread pool's queue, a far Redis)."""

    def take(self, now: float, *, poll: bool, operation: str | None = None) -> Any:
        time.sleep(0.1)
        return super().take(time.time(), poll=poll, operation=operation)


def test_time_before_the_ledger_answers_is_not_lateness() -> None:
    limits = settings(rate=5.0)
    budget = Budget(limits, _SlowToAnswer(limits))

    async def polls() -> None:
        await asyncio.gather(*(budget.acquire_async(poll=True) for _ in range(3)))

    asyncio.run(polls())
    budget.acquire()
    assert (budget.made, budget.status().used) == (4, 4), "no slot was given up"


def test_both_transports_fetch_the_token_before_taking_a_request_slot() -> None:
    """A token fetched after the slot would spend the slot's time (one token request, itself slow
    under load) and the API request would then crowd the next one granted."""
    from airflow_batchcode.exceptions import TransportError
    from airflow_batchcode.services.http.aio import AsyncTransport

    budget = Budget(settings(rate=100.0))
    seen: list[int] = []

    def headers() -> dict[str, str]:
        seen.append(budget.made)
        return {"Authorization": "token"}

    async def async_headers() -> dict[str, str]:
        return headers()

    http = HttpSettings(retry=RetryPolicy(max_attempts=1))
    url = "http://127.0.0.1:9/v1/status"  # nothing listens: the request itself fails at once
    with pytest.raises(TransportError):
        SyncTransport(http, json_message_reader("message"), budget, service="test").api_json(
            "GET", url, headers=headers, what="status"
        )
    assert seen[0] == 0 and budget.made == 1, seen

    async def poll() -> None:
        transport = AsyncTransport(http, json_message_reader("message"), budget, service="test")
        try:
            await transport.api_json("GET", url, headers=async_headers, what="status")
        finally:
            await transport.aclose()

    seen.clear()
    with pytest.raises(TransportError):
        asyncio.run(poll())
    assert seen[0] == 1 and budget.made == 2, seen


def test_hold_off_delays_every_caller() -> None:
    budget = Budget(settings(rate=1000.0))
    budget.hold_off(0.2)
    start = time.monotonic()
    budget.acquire()
    assert time.monotonic() - start >= 0.19


def test_a_spent_window_is_waited_out_and_its_reset_logged(caplog: pytest.LogCaptureFixture) -> None:
    budget = Budget(settings(quota=3, window=QuotaWindow(1)))
    while time.time() % 1 > 0.5:  # start early in a window, so the three fit in it
        time.sleep(0.05)
    window = time.time() // 1
    with caplog.at_level(logging.WARNING, logger="airflow_batchcode.services"):
        for _ in range(4):
            budget.acquire()
    assert time.time() // 1 > window, "the fourth request waited for the next window"
    assert re.search(
        r"The request quota is spent \(3 of 3 in this window\) on test:\w+: calls wait until 20", caplog.text
    )
    assert budget.status().used == 1 and budget.status().left == 2


def test_limit_exceeded_holds_every_call_until_the_window_resets() -> None:
    budget = Budget(settings(window=QuotaWindow(1)))
    wait = budget.exhausted()
    assert 0 < wait <= 1.0
    refused = budget.take()
    assert not refused.granted and refused.reason == "hold"
    assert budget.exhausted(retry_after=0.05) == pytest.approx(0.05, abs=0.01)


class _Broken:
    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("Redis is down")

        return fail


def test_an_unreachable_shared_ledger_falls_back_to_the_process_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    budget = Budget(settings(rate=1000.0, quota=100), shared=_Broken())  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="airflow_batchcode.services"):
        for _ in range(3):
            budget.acquire()
    assert budget.made == 3
    assert caplog.text.count("The shared request budget is unreachable (ConnectionError)") == 1
    assert "Redis is down" not in caplog.text
    status = budget.status()
    assert (status.used, status.left, status.shared) == (3, 97, False)


def test_the_process_carries_on_from_the_last_shared_count() -> None:
    ledger = LocalLedger(settings(quota=10, window=QuotaWindow(30)))
    ledger.adopt(7, reset=3030.0)
    assert ledger.peek(3001.0) == (7, 3030.0)
    assert [ledger.take(3002.0, poll=False).granted for _ in range(4)] == [True, True, True, False]
    ledger.adopt(2, reset=3000.0)  # an older window changes nothing
    assert ledger.peek(3003.0) == (10, 3030.0)


# --- the shared (Redis) ledger --------------------------------------------------------------------


@pytest.fixture
def redis_url() -> Iterator[tuple[str, str]]:
    """Redis on loopback and a unique key prefix, deleted afterwards."""
    redis = pytest.importorskip("redis")
    client = redis.Redis("127.0.0.1", 6379, db=0)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    prefix = f"batchcode-test:{uuid.uuid4().hex}"
    yield "redis://127.0.0.1:6379/0", prefix
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_processes_sharing_a_redis_budget_never_exceed_its_rate_or_quota(redis_url: tuple[str, str]) -> None:
    from airflow_batchcode.services.budget.shared import RedisLedger, redis_client

    url, prefix = redis_url
    shared = BudgetSettings(key="abs:test", rate=50.0, quota=12, window=QuotaWindow(3600), url=url, prefix=prefix)
    # two budgets with ledgers of their own on one Redis: what two processes would have
    a, b = (Budget(shared, RedisLedger(shared, redis_client(url))) for _ in range(2))
    granted: list[float] = []
    lock = threading.Lock()

    def spend(budget: Budget) -> None:
        for _ in range(10):
            grant = budget.take(poll=False)
            if grant.granted:
                time.sleep(grant.delay)
                with lock:
                    granted.append(time.time())

    threads = [threading.Thread(target=spend, args=(budget,)) for budget in (a, b, a, b)]
    started = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 12, "the window's quota, counted once for both"
    assert max(granted) - started >= 11 / 50, "one rate for both: the twelfth slot is eleven intervals on"
    assert a.status().used == b.status().used == 12 and a.status().shared
    assert a.touch("op-1") == 1 and b.touch("op-2") == 2 and a.touch("op-1", open_=False) == 1


# --- the planner ----------------------------------------------------------------------------------


def status(left: int | None, reset_in: float, now: float = 1000.0) -> BudgetStatus:
    return BudgetStatus(used=0, left=left, reset=now + reset_in, made=0, shared=False)


def test_polls_follow_their_interval_then_stretch_with_age_up_to_the_advice() -> None:
    common: dict[str, Any] = {"advice": 600.0, "status": None, "open_operations": 1, "reserve": 0, "rate": 0.0}
    assert plan_poll(poll_interval=5, age=10, now=1000.0, **common).delay == 5
    assert plan_poll(poll_interval=5, age=1000, now=1000.0, **common).delay == 100
    assert plan_poll(poll_interval=5, age=86400, now=1000.0, **common).delay == 600
    assert plan_poll(poll_interval=900, age=86400, now=1000.0, **common).delay == 900, "never below the interval"


def test_polls_stretch_as_the_window_runs_low_and_say_why() -> None:
    plan = plan_poll(
        poll_interval=1, age=0, advice=600, status=status(61, 3000), open_operations=9, reserve=10, rate=0, now=1000.0
    )
    assert plan.delay == pytest.approx(3000 * 9 / 51)
    assert plan.reason == "next poll in 529 s: 61 requests left in this window for 9 open operations"
    roomy = plan_poll(
        poll_interval=1, age=0, advice=600, status=status(5000, 30), open_operations=2, reserve=10, rate=0, now=1000.0
    )
    assert roomy.delay == 1 and roomy.reason is None


def test_with_only_the_reserve_left_polls_wait_for_the_reset() -> None:
    plan = plan_poll(
        poll_interval=1, age=0, advice=600, status=status(3, 20), open_operations=4, reserve=3, rate=0, now=1000.0
    )
    assert plan.delay == 21
    assert plan.reason and "kept for creates, uploads and downloads" in plan.reason


def test_open_operations_share_the_rate() -> None:
    plan = plan_poll(poll_interval=1, age=0, advice=600, status=None, open_operations=1000, reserve=0, rate=1, now=0)
    assert plan.delay == 1000 and plan.reason == "next poll in 1000 s: 1000 open operations share 1 requests/s"


# --- configuration and the transports -------------------------------------------------------------


def test_connection_extras_configure_the_budget_and_abs_defaults_to_its_daily_quota() -> None:
    config = ServiceConfig("abs", "http://127.0.0.1:9", "client", "secret", extra={"rate_limit": 2})
    client: Any = build_client(config)
    try:
        assert (client.budget.settings.rate, client.budget.settings.quota) == (2.0, 10_000)
        assert client.budget.settings.window.length == 86400
    finally:
        client.close()
    extra = {"daily_quota": "25", "quota_window": 30, "budget_url": "redis://:pw@127.0.0.1:1/2"}
    quota = ServiceConfig("abs", "http://127.0.0.1:9", "c", "s", extra=extra).quota_settings()
    assert (quota.daily_quota, quota.quota_window) == (25, 30.0)
    assert "pw" not in repr(quota)
    with pytest.raises(ConfigurationError):
        QuotaSettings(budget_url="http://127.0.0.1:6379")
    with pytest.raises(ConfigurationError):
        QuotaSettings(daily_quota=-1)


def test_limit_exceeded_on_a_budgeted_call_waits_for_the_window_instead_of_failing() -> None:
    budget = Budget(settings(window=QuotaWindow(1)))
    http = HttpSettings(retry=RetryPolicy(max_attempts=1))
    transport = SyncTransport(http, json_message_reader("message"), budget, service="test")
    calls: list[float] = []

    def call() -> str:
        calls.append(time.time())
        if len(calls) == 1:
            raise QuotaExceededError("status: daily request quota exhausted", status_code=429)
        return "done"

    assert transport.retrying(call, what="status", rate_limited=True) == "done"
    assert calls[1] // 1 > calls[0] // 1, "the second try waited for the next window"
    with pytest.raises(QuotaExceededError):
        calls.clear()
        transport.retrying(call, what="status", rate_limited=False)
