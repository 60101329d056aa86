"""Fixtures shared by every suite: the ABS emulator on a free loopback port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_batchcode.emulator.config import EmulatorConfig
from airflow_batchcode.emulator.server import EmulatorServer
from tests.support import FAST_EMULATOR


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., EmulatorServer]]:
    """Factory of started emulators (``make_emulator(rate_limit=2, ...)``), stopped at teardown."""
    servers: list[EmulatorServer] = []

    def factory(**overrides: Any) -> EmulatorServer:
        server = EmulatorServer(EmulatorConfig(**{**FAST_EMULATOR, **overrides})).start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def abs_emulator(make_emulator: Callable[..., EmulatorServer]) -> EmulatorServer:
    """A started ABS emulator with :data:`FAST_EMULATOR` settings."""
    return make_emulator()
