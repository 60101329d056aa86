"""A transport exception is described by its type and, when it says more, what it wraps: real sockets on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import requests

from airflow_batchcode.services.http.errors import describe_exception


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _plain_server() -> Iterator[int]:
    """A loopback port that answers anything with plain HTTP (a TLS client gets no handshake)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


def test_a_refused_connection_says_so_on_both_clients() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1/topics"
    with pytest.raises(requests.ConnectionError) as sync:
        requests.get(url, timeout=5)
    with pytest.raises(httpx.ConnectError) as aio:
        httpx.get(url, timeout=5)
    assert describe_exception(sync.value) == "ConnectionError: connection refused"
    assert describe_exception(aio.value) == "ConnectError: connection refused"


def test_a_tls_handshake_with_a_plain_server_says_tls() -> None:
    with _plain_server() as port:
        with pytest.raises(requests.exceptions.SSLError) as sync:
            requests.get(f"https://127.0.0.1:{port}/", timeout=5)
        with pytest.raises(httpx.ConnectError) as aio:
            httpx.get(f"https://127.0.0.1:{port}/", timeout=5)
    assert describe_exception(sync.value) == "SSLError: TLS error"
    assert describe_exception(aio.value) == "ConnectError: TLS error"
