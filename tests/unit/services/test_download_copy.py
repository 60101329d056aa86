"""``copy_body``: how a download's body reaches its sink (reused buffer, or ``iter_content`` when encoded)."""

from __future__ import annotations

import gzip
import io
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from airflow_batchcode.services.http.bodies import DOWNLOAD_READ_BYTES, copy_body
from airflow_batchcode.services.http.errors import describe_exception

BODY = os.urandom(3 * DOWNLOAD_READ_BYTES + 17)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/plain":
            self._send(BODY, {"Content-Length": str(len(BODY))})
        elif self.path == "/gzip":
            packed = gzip.compress(BODY)
            self._send(packed, {"Content-Length": str(len(packed)), "Content-Encoding": "gzip"})
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(BODY), 100_000):
                part = BODY[start : start + 100_000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/short":
            self._send(BODY[:1000], {"Content-Length": str(len(BODY))})
            self.close_connection = True
        elif self.path == "/stall":
            self._send(BODY[:1000], {"Content-Length": str(len(BODY))})
            time.sleep(1.0)
            self.close_connection = True

    def _send(self, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def copy(url: str, timeout: float = 10.0) -> tuple[bytes, list[int]]:
    sink = io.BytesIO()
    with requests.get(url, stream=True, timeout=timeout) as response:
        sizes = list(copy_body(response, sink))
    return sink.getvalue(), sizes


def test_a_plain_body_is_copied_whole_through_the_reused_buffer(base_url: str) -> None:
    data, sizes = copy(f"{base_url}/plain")
    assert data == BODY
    assert sum(sizes) == len(BODY) and max(sizes) <= DOWNLOAD_READ_BYTES


@pytest.mark.parametrize("path", ["/gzip", "/chunked"])
def test_encoded_and_chunked_bodies_arrive_decoded(base_url: str, path: str) -> None:
    data, sizes = copy(f"{base_url}{path}")
    assert data == BODY and sum(sizes) == len(BODY)


def test_a_body_cut_short_yields_every_byte_that_arrived(base_url: str) -> None:
    data, sizes = copy(f"{base_url}/short")
    assert data == BODY[:1000] and sum(sizes) == 1000


def test_a_read_that_times_out_is_a_requests_connection_error_described_as_a_timeout(base_url: str) -> None:
    with pytest.raises(requests.ConnectionError) as caught:
        copy(f"{base_url}/stall", timeout=0.2)
    assert describe_exception(caught.value) == "ConnectionError: timed out"
