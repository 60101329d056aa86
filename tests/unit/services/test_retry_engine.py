"""The retry engine: the sans-IO policy (clock and jitter injected) and the loops that drive it."""

from __future__ import annotations

import asyncio
import inspect
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from airflow_batchcode import exceptions
from airflow_batchcode.exceptions import (
    AuthenticationError,
    BatchCodeError,
    ConfigurationError,
    IncompleteDownloadError,
    NotFoundError,
    QuotaExceededError,
    RateLimitedError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
)
from airflow_batchcode.services.budget import Budget, BudgetSettings
from airflow_batchcode.services.http import AsyncTransport, HttpSettings, SyncTransport, json_message_reader
from airflow_batchcode.services.http.retry import Retry, RetryPolicy, parse_retry_after

POLICY = RetryPolicy(max_attempts=4, backoff_base=1.0, backoff_max=5.0, retry_after_max=30.0)


def top(low: float, high: float) -> float:
    """Jitter that always draws the upper bound."""
    return high


def bottom(low: float, high: float) -> float:
    """Jitter that always draws the lower bound."""
    return low


def failing_tries(error: BaseException, tries: int, **kwargs: Any) -> list[Retry | None]:
    """What the engine answers after each of ``tries`` tries failing with ``error``."""
    attempts = POLICY.attempts(jitter=top, **kwargs)
    decisions = []
    for _ in range(tries):
        attempts.start()
        decisions.append(attempts.after(error))
    return decisions


def test_backoff_doubles_up_to_its_cap_between_the_jitter_bounds() -> None:
    drawn: list[tuple[float, float]] = []

    def record(low: float, high: float) -> float:
        drawn.append((low, high))
        return high

    for attempt in (1, 2, 3, 4, 9):
        POLICY.delay(attempt, jitter=record)
    assert drawn == [(0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (2.5, 5.0), (2.5, 5.0)]
    assert POLICY.delay(3, jitter=bottom) == 2.0


def test_a_transient_error_is_retried_until_the_tries_run_out() -> None:
    decisions = failing_tries(ServerError("x", status_code=503), 4)
    assert decisions == [Retry(1.0), Retry(2.0), Retry(4.0), None]


@pytest.mark.parametrize(
    "error",
    [
        NotFoundError("x", status_code=404),
        QuotaExceededError("x", status_code=429, service_message="Limit Exceeded"),
        ServerError("x", status_code=501),
        UnexpectedResponseError("not JSON"),
        AuthenticationError("x", status_code=401),
        ValueError("not ours"),
    ],
)
def test_a_final_error_is_raised_at_once(error: BaseException) -> None:
    assert failing_tries(error, 1) == [None]


def test_retry_after_replaces_the_backoff_and_a_long_one_fails_fast() -> None:
    assert failing_tries(RateLimitedError("x", status_code=429, retry_after=7.0), 2) == [Retry(7.0), Retry(7.0)]
    # a very short Retry-After still waits a little: at most a second of the backoff
    assert failing_tries(RateLimitedError("x", status_code=429, retry_after=0.0), 1) == [Retry(1.0)]
    assert failing_tries(RateLimitedError("x", status_code=429, retry_after=31.0), 1) == [None]


def test_a_lost_answer_ends_a_call_that_is_not_safe_to_repeat() -> None:
    lost = TransportError("create: POST https://h/jobs failed (ReadTimeout: timed out)")
    assert failing_tries(lost, 1, idempotent=True) == [Retry(1.0)]
    assert failing_tries(lost, 1, idempotent=False) == [None]
    assert failing_tries(IncompleteDownloadError("cut"), 1, idempotent=False) == [None]
    # the service itself answered: it did not carry the call out, so even a create is tried again
    for status in (500, 503):
        assert failing_tries(ServerError("x", status_code=status), 1, idempotent=False) == [Retry(1.0)]
    # a gateway answered for it (502, 504): the service may have done it, so a create is not repeated
    for status in (502, 504):
        assert failing_tries(ServerError("x", status_code=status), 1, idempotent=False) == [None]
        assert failing_tries(ServerError("x", status_code=status), 1, idempotent=True) == [Retry(1.0)]
    throttled = RateLimitedError("x", status_code=429, retry_after=2.0)
    assert failing_tries(throttled, 1, idempotent=False) == [Retry(2.0)]


def test_a_refused_credential_is_refreshed_once_when_the_caller_can() -> None:
    refused = AuthenticationError("x", status_code=401)
    assert failing_tries(refused, 2, refresh_auth=True) == [Retry(0.0, refresh_auth=True), None]
    assert failing_tries(refused, 1, refresh_auth=False) == [None]


def test_a_policy_checks_its_numbers() -> None:
    with pytest.raises(ConfigurationError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigurationError, match="negative"):
        RetryPolicy(backoff_base=-1)


def test_retry_after_dates_are_read_against_the_injected_clock() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    assert parse_retry_after(" 12.5 ", now=now) == 12.5
    assert parse_retry_after("-3", now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None


def test_transience_is_decided_on_the_exception_classes_and_the_tree_lists_them_all() -> None:
    transient = {
        TransportError("x"),
        IncompleteDownloadError("x"),
        RateLimitedError("x", status_code=429),
        *(ServerError("x", status_code=status) for status in (500, 502, 503, 504)),
    }
    assert all(error.transient for error in transient)
    assert all(error.answer_lost for error in transient if isinstance(error, TransportError))
    gateway = {error for error in transient if getattr(error, "status_code", None) in (502, 504)}
    assert all(error.answer_lost for error in gateway)
    assert not any(error.answer_lost for error in transient - gateway if not isinstance(error, TransportError))
    classes = [c for _, c in inspect.getmembers(exceptions, inspect.isclass) if issubclass(c, BatchCodeError)]
    tree = exceptions.__doc__ or ""
    for kind in classes:
        assert re.search(rf"\b{kind.__name__}\b", tree), f"{kind.__name__} is missing from the tree"
        if kind not in (TransportError, IncompleteDownloadError, RateLimitedError, ServerError):
            assert not kind.transient, kind
    assert not ServerError("x", status_code=501).transient


# --- the loops that drive the engine ----------------------------------------------------------------


def transport(kind: type[Any], max_attempts: int = 3) -> Any:
    settings = HttpSettings(retry=RetryPolicy(max_attempts=max_attempts, backoff_base=0.0, backoff_max=0.0))
    return kind(settings, json_message_reader("message"), Budget(BudgetSettings("test")), service="test")


def scripted(*outcomes: Any) -> tuple[Any, list[int]]:
    """A call that raises or returns ``outcomes`` in turn, and the list counting its calls."""
    calls: list[int] = []

    def call() -> Any:
        calls.append(1)
        outcome = outcomes[len(calls) - 1]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return call, calls


def test_the_sync_loop_retries_and_refreshes_as_the_engine_says() -> None:
    sync = transport(SyncTransport)
    call, calls = scripted(ServerError("x", status_code=503), TransportError("y"), "done")
    assert sync.retrying(call, what="thing") == "done" and len(calls) == 3
    refreshed: list[int] = []
    call, calls = scripted(AuthenticationError("x", status_code=401), "done")
    assert sync.retrying(call, what="thing", on_auth_failure=lambda: refreshed.append(1)) == "done"
    assert refreshed == [1]


def test_the_sync_loop_looks_for_a_lost_create_before_repeating_it() -> None:
    sync = transport(SyncTransport)
    call, calls = scripted(TransportError("lost"), "never")
    assert sync.retrying(call, what="create", idempotent=False, recover=lambda error: "found") == "found"
    assert len(calls) == 1, "what the lost call did is found, not done again"
    call, calls = scripted(TransportError("lost"), "created")
    assert sync.retrying(call, what="create", idempotent=False, recover=lambda error: None) == "created"
    assert len(calls) == 2, "nothing found: repeating is safe"
    call, calls = scripted(TransportError("lost"), "never")
    with pytest.raises(TransportError, match="lost"):
        sync.retrying(call, what="create", idempotent=False)
    assert len(calls) == 1


def test_the_sync_loop_handles_only_its_errors_and_words_its_give_up() -> None:
    sync = transport(SyncTransport, max_attempts=2)
    call, calls = scripted(TransportError("request failed"), "never")
    with pytest.raises(TransportError, match="request failed"):
        sync.retrying(call, what="download", handled=(IncompleteDownloadError,))
    assert len(calls) == 1
    call, calls = scripted(IncompleteDownloadError("cut"), IncompleteDownloadError("cut again"))
    with pytest.raises(IncompleteDownloadError, match="gave up after: cut again"):
        sync.retrying(
            call,
            what="download",
            handled=(IncompleteDownloadError,),
            give_up=lambda error: IncompleteDownloadError(f"gave up after: {error}"),
        )
    assert len(calls) == 2


def test_the_async_loop_is_driven_by_the_same_engine() -> None:
    async def scenario() -> None:
        aio = transport(AsyncTransport)
        outcomes = iter([RateLimitedError("x", status_code=429, retry_after=0.0), "done"])

        async def call() -> str:
            outcome = next(outcomes)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        assert await aio.retrying(call, what="status") == "done"

        async def lost() -> str:
            raise TransportError("lost")

        with pytest.raises(TransportError):
            await aio.retrying(lost, what="create", idempotent=False)
        await aio.aclose()

    asyncio.run(scenario())


def test_an_error_another_loop_gave_up_on_is_final_and_says_why() -> None:
    spent = ServerError("token request: service error", status_code=500)
    spent.stop_retrying("gave up after 6 tries and 31 s of backoff")
    assert spent.retries_spent and str(spent).endswith("HTTP 500; gave up after 6 tries and 31 s of backoff")
    assert failing_tries(spent, 1) == [None]
    # not even refreshed as a refused credential would be: the inner loop already decided
    refused = AuthenticationError("token request: not authorised", status_code=401)
    refused.stop_retrying()
    assert failing_tries(refused, 1, refresh_auth=True) == [None] and str(refused).endswith("HTTP 401")


def test_the_final_note_says_the_tries_were_used_up_or_the_retry_after_was_too_long() -> None:
    attempts = POLICY.attempts(jitter=top)
    error = ServerError("x", status_code=503)
    for _ in range(POLICY.max_attempts):
        attempts.start()
        decision = attempts.after(error)
    assert decision is None and attempts.waited == 1.0 + 2.0 + 4.0
    assert attempts.final_note == "gave up after 4 tries and 7 s of backoff" and attempts.spends
    waiting = POLICY.attempts()
    waiting.start()
    too_long = RateLimitedError("x", status_code=429, retry_after=31.0)
    assert waiting.after(too_long) is None
    assert waiting.final_note == (
        "not tried again: the service asked to wait 31 s (Retry-After), longer than the 30 s a call waits"
    )
    # a final error that is not transient, or a first try that is also the last, needs no note
    assert waiting.after(NotFoundError("x", status_code=404)) is None and waiting.final_note is None
    single = RetryPolicy(max_attempts=1).attempts()
    single.start()
    assert single.after(error) is None and single.final_note is None
    assert not single.spends, "a loop of one try leaves the decision to its caller"
