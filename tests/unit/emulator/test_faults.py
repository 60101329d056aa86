"""Fault injection: which requests get which fault, and what each fault puts on the wire (raw ASGI)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any

import pytest

from airflow_batchcode.emulator.config import EmulatorConfig
from airflow_batchcode.emulator.faults import (
    FaultInjector,
    FaultMiddleware,
    FaultSettings,
    quiet_dropped_responses,
    settings_from,
)

Message = dict[str, Any]


class Scripted(random.Random):
    """A random generator returning the given draws."""

    def __init__(self, draws: list[float]) -> None:
        super().__init__(0)
        self.draws = list(draws)

    def random(self) -> float:
        return self.draws.pop(0)


class App:
    """Answers JSON on the API, and a 1000-byte body in ten chunks on storage; records calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.chunks_sent = 0

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        self.calls += 1
        if scope["path"].startswith("/_storage/") and scope["method"] == "GET":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]})
            for i in range(10):
                self.chunks_sent += 1
                await send({"type": "http.response.body", "body": bytes([65 + i]) * 100, "more_body": i < 9})
            return
        body = b"" if scope["method"] == "PUT" else b'{"ok":true}'
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def call(
    injector: FaultInjector, method: str, path: str, app: App | None = None, **options: Any
) -> tuple[list[Message], App]:
    app = app or App()
    messages: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": []}
    asyncio.run(FaultMiddleware(app, injector, **options)(scope, receive, send))  # type: ignore[arg-type]
    return messages, app


def injector(seed: int = 0, **settings: Any) -> FaultInjector:
    return FaultInjector(FaultSettings(**settings), seed=seed)


def body_of(messages: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


def headers_of(messages: list[Message]) -> dict[bytes, bytes]:
    return dict(messages[0]["headers"])


def completed(messages: list[Message]) -> bool:
    return messages[-1]["type"] == "http.response.body" and not messages[-1].get("more_body", False)


def test_no_faults_passes_through_without_drawing() -> None:
    faults = FaultInjector(FaultSettings(), rng=Scripted([]))
    messages, app = call(faults, "GET", "/v1/topics")
    assert app.calls == 1 and messages[0]["status"] == 200 and completed(messages)
    assert faults.injected == {}


def test_5xx_on_the_api_is_the_gateway_message_and_skips_the_request() -> None:
    faults = injector(fault_5xx_rate=1.0)
    messages, app = call(faults, "POST", "/v1/topics/osca/batch-code")
    assert app.calls == 0
    assert messages[0]["status"] == 500
    assert json.loads(body_of(messages)) == {"message": "Error performing request"}
    assert headers_of(messages)[b"content-type"] == b"application/json"
    assert faults.injected["5xx"] == 1


def test_5xx_and_429_on_storage_are_s3_xml() -> None:
    messages, _ = call(injector(fault_5xx_rate=1.0), "PUT", "/_storage/b/k")
    assert messages[0]["status"] == 500 and b"<Code>InternalError</Code>" in body_of(messages)
    assert headers_of(messages)[b"content-type"] == b"application/xml"
    messages, _ = call(injector(fault_429_rate=1.0, fault_retry_after=4), "GET", "/_storage/b/k")
    assert messages[0]["status"] == 503 and b"<Code>SlowDown</Code>" in body_of(messages)
    assert headers_of(messages)[b"retry-after"] == b"4"


def test_429_has_retry_after_and_comes_in_bursts() -> None:
    faults = FaultInjector(
        FaultSettings(fault_429_rate=0.5, fault_429_burst=3, fault_retry_after=2), rng=Scripted([0.1, 0.9])
    )
    statuses = []
    for _ in range(4):
        messages, _ = call(faults, "GET", "/v1/topics")
        statuses.append(messages[0]["status"])
        if messages[0]["status"] == 429:
            assert json.loads(body_of(messages)) == {"message": "Too Many Requests"}
            assert headers_of(messages)[b"retry-after"] == b"2"
    assert statuses == [429, 429, 429, 200]
    assert faults.injected["429"] == 3


def test_same_seed_same_faults() -> None:
    def run(seed: int) -> list[str | None]:
        faults = injector(
            seed, fault_5xx_rate=0.2, fault_429_rate=0.1, fault_slow_rate=0.1, fault_lost_response_rate=0.1
        )
        return [faults.decide("GET", "/v1/topics") for _ in range(300)]

    first = run(7)
    assert first == run(7)
    assert first != run(8)
    assert {"5xx", "429", "slow", "lost_response", None} <= set(first)


@pytest.mark.parametrize("path", ["/_emulator/stats", "/_emulator/faults", "/openapi.json", "/docs", "/"])
def test_admin_and_documents_are_never_faulted(path: str) -> None:
    faults = injector(fault_5xx_rate=1.0)
    assert faults.decide("GET", path) is None and faults.decide("POST", path) is None


@pytest.mark.parametrize("path", ["/v1/topics", "/oauth2/token", "/_storage/abs-coder-input/x/input.jsonl"])
def test_service_routes_are_faulted(path: str) -> None:
    assert injector(fault_5xx_rate=1.0).decide("POST", path) == "5xx"


def test_fault_only_scopes_by_method_and_path() -> None:
    faults = injector(fault_5xx_rate=1.0, fault_only=r"^POST .*/batch-code$")
    assert faults.decide("POST", "/v1/topics/osca/batch-code") == "5xx"
    assert faults.decide("POST", "/v1/topics/osca/models/m/batch-code") == "5xx"
    assert faults.decide("GET", "/v1/topics/osca/batch-code/operations/x") is None
    assert faults.decide("GET", "/v1/topics") is None


def test_truncation_only_hits_storage_downloads() -> None:
    faults = injector(fault_truncate_rate=1.0)
    assert faults.decide("GET", "/v1/topics") is None
    assert faults.decide("PUT", "/_storage/b/k") is None
    assert faults.decide("GET", "/_storage/b/k") == "truncate"


def test_lost_response_carries_out_the_request_then_cuts_the_body() -> None:
    messages, app = call(injector(fault_lost_response_rate=1.0), "POST", "/v1/topics/osca/batch-code")
    assert app.calls == 1
    assert messages[0]["status"] == 200
    assert headers_of(messages)[b"content-length"] == b"11"
    assert body_of(messages) == b'{"ok"' and not completed(messages)


def test_lost_response_to_an_empty_body_announces_a_body_it_never_sends() -> None:
    messages, app = call(injector(fault_lost_response_rate=1.0), "PUT", "/_storage/b/k")
    assert app.calls == 1
    assert b"content-length" not in headers_of(messages)
    assert len(messages) == 1


def test_lost_response_stops_a_streaming_body_early() -> None:
    messages, app = call(injector(fault_lost_response_rate=1.0), "GET", "/_storage/b/k")
    assert app.chunks_sent == 1
    assert headers_of(messages)[b"content-length"] == b"1000"
    assert len(body_of(messages)) == 50 and not completed(messages)


def test_truncate_sends_exactly_half_then_stops() -> None:
    faults = injector(fault_truncate_rate=1.0)
    messages, app = call(faults, "GET", "/_storage/b/k")
    assert headers_of(messages)[b"content-length"] == b"1000"
    assert body_of(messages) == b"A" * 100 + b"B" * 100 + b"C" * 100 + b"D" * 100 + b"E" * 100
    assert not completed(messages)
    assert app.chunks_sent == 5
    assert faults.injected["truncate"] == 1


def test_slow_waits_then_answers() -> None:
    started = time.perf_counter()
    messages, app = call(injector(fault_slow_rate=1.0, fault_slow_seconds=0.2), "GET", "/v1/topics")
    assert time.perf_counter() - started >= 0.2
    assert app.calls == 1 and messages[0]["status"] == 200 and completed(messages)


def test_non_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    asyncio.run(FaultMiddleware(app, injector(fault_5xx_rate=1.0))({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    assert seen == ["lifespan"]


def test_update_accepts_short_names_and_reseeds() -> None:
    faults = injector(3)
    current = faults.update({"5xx_rate": 0.5, "fault_only": "^GET ", "seed": 9, "slow_seconds": 1})
    assert current["fault_5xx_rate"] == 0.5 and current["fault_only"] == "^GET " and current["seed"] == 9
    assert current["fault_slow_seconds"] == 1.0
    fresh = injector(9, fault_5xx_rate=0.5, fault_only="^GET ")
    assert [faults.decide("GET", "/v1/x") for _ in range(50)] == [fresh.decide("GET", "/v1/x") for _ in range(50)]
    assert faults.update({"fault_only": ""})["fault_only"] is None


def test_update_stops_a_running_burst() -> None:
    faults = injector(fault_429_rate=1.0, fault_429_burst=5)
    assert faults.decide("GET", "/v1/topics") == "429"
    faults.update({"fault_429_rate": 0})
    assert faults.decide("GET", "/v1/topics") is None


@pytest.mark.parametrize(
    "changes",
    [
        {"fault_5xx_rate": 1.5},
        {"fault_429_rate": -0.1},
        {"fault_429_burst": 0},
        {"fault_429_burst": 1.5},
        {"fault_only": "("},
        {"fault_only": 5},
        {"nonsense": 1},
        {"fault_slow_rate": "often"},
        {"fault_slow_rate": True},
        {"seed": "x"},
        {"fault_retry_after": -1},
    ],
)
def test_update_rejects_bad_values_and_keeps_the_old_ones(changes: dict[str, Any]) -> None:
    faults = injector(fault_5xx_rate=0.25)
    with pytest.raises(ValueError):
        faults.update(changes)
    assert faults.settings.fault_5xx_rate == 0.25


def test_settings_come_from_the_emulator_config() -> None:
    config = EmulatorConfig(fault_5xx_rate=0.1, fault_429_burst=7, fault_only="x")
    settings = settings_from(config)
    assert (settings.fault_5xx_rate, settings.fault_429_burst, settings.fault_only) == (0.1, 7, "x")
    assert FaultInjector(settings, seed=3).to_json()["seed"] == 3


def test_uvicorns_complaint_about_dropped_responses_is_silenced() -> None:
    quiet_dropped_responses()
    quiet_dropped_responses()
    logger = logging.getLogger("uvicorn.error")
    assert len([f for f in logger.filters if type(f).__name__ == "_DropNoise"]) == 1

    def record(text: str) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, text, None, None)

    assert not logger.filter(record("ASGI callable returned without completing response."))
    assert logger.filter(record("something else went wrong"))


def test_injected_api_errors_take_the_services_error_shape() -> None:
    def envelope(message: str) -> dict[str, Any]:
        return {"data": None, "isError": True, "errorMessage": message}

    for kind, status, message in (("5xx", 500, "Error performing request"), ("429", 429, "Too Many Requests")):
        faults = injector(**{f"fault_{kind}_rate": 1.0})
        messages, app = call(faults, "GET", "/api/v1/jobs/latest", error_body=envelope)
        assert app.calls == 0 and messages[0]["status"] == status and completed(messages)
        assert json.loads(body_of(messages)) == {"data": None, "isError": True, "errorMessage": message}
        assert headers_of(messages)[b"content-type"] == b"application/json"
        assert int(headers_of(messages)[b"content-length"]) == len(body_of(messages))
        storage, _ = call(injector(**{f"fault_{kind}_rate": 1.0}), "GET", "/_storage/b/k", error_body=envelope)
        assert headers_of(storage)[b"content-type"] == b"application/xml", "storage errors stay S3's"
