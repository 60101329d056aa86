"""Run a service emulator on uvicorn: in a background thread (tests, demo) or in the foreground (CLI).

``service`` picks the app: its catalogue spec (:mod:`airflow_batchcode.services.catalogue`) names
the app factory, ``function(config) -> FastAPI``, which sets ``app.state.service`` to an object with
a ``close()`` method.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import signal
import socket
import threading
import time
from types import FrameType, TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI

from airflow_batchcode.emulator.config import EmulatorConfig
from airflow_batchcode.emulator.faults import quiet_dropped_responses
from airflow_batchcode.services.catalogue import DEFAULT_SERVICE, all_specs, spec_for

_STARTUP_TIMEOUT = 15.0

EMULATED_SERVICES = tuple(spec.name for spec in all_specs() if spec.emulator)
"""The services with an emulator, in catalogue order."""


def create_app(config: EmulatorConfig, service: str = DEFAULT_SERVICE) -> FastAPI:
    """The emulator app of ``service``."""
    if service not in EMULATED_SERVICES:
        raise ValueError(f"no emulator for service {service!r}; choose one of {', '.join(EMULATED_SERVICES)}")
    app: FastAPI = spec_for(service).emulator_factory()(config)
    return app


class EmulatorServer:
    """A real HTTP server around a service emulator's app, running uvicorn in a daemon thread.

    ``port=0`` picks a free port; the socket is bound in the constructor's caller thread, so
    :attr:`base_url` is known before :meth:`start`. Use as a context manager.

    :param config: emulator settings (defaults when omitted).
    :param host: interface to listen on.
    :param port: TCP port, 0 for any free one.
    :param service: which service to emulate (one of :data:`EMULATED_SERVICES`).
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        service: str = DEFAULT_SERVICE,
    ) -> None:
        self.config = config or EmulatorConfig()
        self.host = host
        self.service_name = service
        self.app: FastAPI = create_app(self.config, service)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError:
            self._socket.close()
            self.service.close()
            raise
        self.port: int = self._socket.getsockname()[1]
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def service(self) -> Any:
        """The app's state (clock, operations, counters), e.g. an ``AbsService`` for ABS."""
        return self.app.state.service

    @property
    def base_url(self) -> str:
        """``http://host:port`` clients should call."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def start(self) -> EmulatorServer:
        """Serve in a background thread; return once the socket accepts connections."""
        if self._thread is not None:
            return self
        config = uvicorn.Config(
            self.app,
            http="httptools" if importlib.util.find_spec("httptools") else "auto",
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=2,
            backlog=4096,
            server_header=False,
        )
        quiet_dropped_responses()
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"{self.service_name}-emulator",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the {self.service_name} emulator did not start")
            time.sleep(0.01)
        connect_host = self.base_url.split("//", 1)[1].rsplit(":", 1)[0].strip("[]")
        with socket.create_connection((connect_host, self.port), timeout=5):
            pass
        return self

    def stop(self) -> None:
        """Stop serving, wait for the thread, stop the workers and remove temporary files."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._socket.close()
        self.service.close()

    @property
    def running(self) -> bool:
        """True while the server thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve(config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0, service: str = DEFAULT_SERVICE) -> int:
    """Serve in the foreground until SIGINT or SIGTERM; print the base URL once listening."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server = EmulatorServer(config, host, port, service=service)
        server.start()
        try:
            print(f"{spec_for(service).label} emulator listening on {server.base_url}", flush=True)
            while not stop.wait(0.2):
                if not server.running:
                    return 1
        finally:
            with contextlib.suppress(Exception):
                server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
