"""The async transport's shared ``httpx.AsyncClient``: one per service, timeouts and event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from airflow_batchcode.services.budget import Budget, BudgetSettings
from airflow_batchcode.services.http.aio import AsyncTransport
from airflow_batchcode.services.http.errors import json_message_reader
from airflow_batchcode.services.http.pool import SHARED_CONNECTIONS, shared_async_client_count
from airflow_batchcode.services.http.settings import HttpSettings


@dataclass
class Server:
    """A minimal keep-alive HTTP/1.1 server answering ``{"ok": true}`` to every request."""

    url: str = ""
    delay: float = 0.0
    connections: int = 0
    closed: int = 0
    requests: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    cookies_seen: list[str] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                self.requests += 1
                lines = head.decode("latin-1").split("\r\n")
                self.cookies_seen += [line for line in lines if line.lower().startswith("cookie:")]
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                await asyncio.sleep(self.delay)
                self.in_flight -= 1
                body = b'{"ok": true}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nSet-Cookie: session=abc; Path=/\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed += 1
            writer.close()


@asynccontextmanager
async def serving(delay: float = 0.0) -> AsyncIterator[Server]:
    server = Server(delay=delay)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}/status"
    async with listener:
        yield server


def transport(service: str = "svc", read_timeout: float = 60.0) -> AsyncTransport:
    settings = HttpSettings(read_timeout=read_timeout)
    return AsyncTransport(settings, json_message_reader("message"), Budget(BudgetSettings("test")), service=service)


async def poll(t: AsyncTransport, url: str) -> object:
    return await t.api_json("GET", url, headers=dict, what="status")


def test_transports_of_one_service_share_one_client_and_its_connections() -> None:
    async def scenario() -> None:
        async with serving() as server:
            transports = [transport() for _ in range(20)]
            for _ in range(2):
                for t in transports:
                    assert await poll(t, server.url) == {"ok": True}
            loop = asyncio.get_running_loop()
            assert shared_async_client_count(loop) == 1
            assert server.requests == 40 and server.connections == 1
            for t in transports:
                await t.aclose()
            assert shared_async_client_count(loop) == 0
            await asyncio.sleep(0.05)
            assert server.closed == 1

    asyncio.run(scenario())


def test_a_transport_built_in_a_worker_thread_leases_its_client_on_the_loop_that_uses_it() -> None:
    async def scenario() -> None:
        async with serving() as server:
            t = await asyncio.to_thread(transport)
            assert shared_async_client_count(asyncio.get_running_loop()) == 0
            assert await poll(t, server.url) == {"ok": True}
            assert shared_async_client_count(asyncio.get_running_loop()) == 1
            await t.aclose()

    asyncio.run(scenario())


def test_closing_one_transport_leaves_the_client_open_for_the_others() -> None:
    async def scenario() -> None:
        async with serving() as server:
            first, second = transport(), transport()
            await poll(first, server.url)
            await poll(second, server.url)
            await first.aclose()
            await first.aclose()  # closing twice must not count twice
            await asyncio.sleep(0.05)
            assert server.closed == 0
            assert await poll(second, server.url) == {"ok": True}
            assert server.connections == 1
            await second.aclose()
            await asyncio.sleep(0.05)
            assert server.closed == 1
            assert shared_async_client_count(asyncio.get_running_loop()) == 0

    asyncio.run(scenario())


def test_a_closed_transport_can_be_used_again_with_a_fresh_client() -> None:
    async def scenario() -> None:
        async with serving() as server:
            t = transport()
            await poll(t, server.url)
            await t.aclose()
            assert await poll(t, server.url) == {"ok": True}
            assert server.connections == 2
            await t.aclose()

    asyncio.run(scenario())


def test_services_and_timeouts_get_their_own_clients() -> None:
    async def scenario() -> None:
        async with serving() as server:
            transports = [transport("a"), transport("a"), transport("b"), transport("a", read_timeout=5.0)]
            for t in transports:
                await poll(t, server.url)
            assert shared_async_client_count(asyncio.get_running_loop()) == 3
            assert server.connections == 3
            for t in transports:
                await t.aclose()

    asyncio.run(scenario())


def test_each_event_loop_gets_its_own_client() -> None:
    t = transport()

    async def scenario() -> None:
        async with serving() as server:
            assert await poll(t, server.url) == {"ok": True}
            assert shared_async_client_count(asyncio.get_running_loop()) == 1

    asyncio.run(scenario())
    asyncio.run(scenario())  # the first loop is gone: the transport moves to the new one

    async def close() -> None:
        await t.aclose()

    asyncio.run(close())


def test_no_cookie_is_carried_from_one_response_to_the_next_request() -> None:
    async def scenario() -> None:
        async with serving() as server:
            first, second = transport(), transport()
            await poll(first, server.url)
            await poll(second, server.url)
            await poll(first, server.url)
            assert server.cookies_seen == []
            await first.aclose()
            await second.aclose()

    asyncio.run(scenario())


def test_concurrent_requests_wait_their_turn_beyond_the_shared_connection_limit() -> None:
    async def scenario() -> None:
        async with serving(delay=0.02) as server:
            transports = [transport() for _ in range(3 * SHARED_CONNECTIONS)]
            results = await asyncio.gather(*(poll(t, server.url) for t in transports))
            assert results == [{"ok": True}] * len(transports)
            assert server.most_in_flight <= SHARED_CONNECTIONS
            assert server.connections <= SHARED_CONNECTIONS
            for t in transports:
                await t.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize("closing_first", [True, False])
def test_closing_while_another_transport_polls_does_not_break_it(closing_first: bool) -> None:
    async def scenario() -> None:
        async with serving(delay=0.05) as server:
            first, second = transport(), transport()
            await poll(first, server.url)
            pending = asyncio.ensure_future(poll(second, server.url))
            await asyncio.sleep(0.01)
            if closing_first:
                await first.aclose()
            assert await pending == {"ok": True}
            await first.aclose()
            await second.aclose()
            assert shared_async_client_count(asyncio.get_running_loop()) == 0

    asyncio.run(scenario())
