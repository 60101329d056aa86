"""What a native stack claims on this host, and how it gives it back.

Free loopback ports, the names and secrets of one stack (:class:`Resources`), the PostgreSQL server
and Redis it makes its databases on, child processes that die with the stack's process
(:func:`die_with_parent`), and the sweep of what stacks killed before their clean-up left behind
(:func:`sweep_abandoned`): each thing a stack makes carries its owner mark, ``host:pid:suffix``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

PG_ADMIN_DSN = os.environ.get("BATCHCODE_STACK_PG", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
REDIS_URL = os.environ.get("BATCHCODE_STACK_REDIS", "redis://127.0.0.1:6379")
CLAIM_KEY = "batchcode-stack:claim"
OWNER_PREFIX = "batchcode-stack owner="

T = TypeVar("T")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    """Call ``probe`` until it returns something other than ``None``/``False``; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except Exception as exc:  # a service still starting answers with all kinds of errors
            last_error, result = exc, None
        if result is not None and result is not False:
            return result
        time.sleep(interval)
    detail = f" (last error: {last_error})" if last_error else ""
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s{detail}")


try:
    _LIBC: Any = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux
    _LIBC = None


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """New process group; and ask Linux to SIGTERM the child when its parent dies (no orphans after a crash)."""
    os.setsid()
    if _LIBC is not None and sys.platform.startswith("linux"):
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _abandoned(owner: str) -> bool:
    """True for ``host:pid:suffix`` of a stack on this host whose process no longer exists."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def sweep_abandoned() -> None:
    """Remove what stacks on this host left when they were killed before cleaning up (SIGKILL, a lost CI job).

    Only what carries the owner mark of a stack whose process is gone: ``batchcode_stack_*`` databases
    (database comment), claimed Redis databases (claim key) and ``batchcode-stack-*`` temporary folders.
    """
    import psycopg
    import redis

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as server:
        rows = server.execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE datname LIKE 'batchcode_stack_%'"
        ).fetchall()
        for name, comment in rows:
            if comment and comment.startswith(OWNER_PREFIX) and _abandoned(comment[len(OWNER_PREFIX) :]):
                server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for number in range(1, 16):
        client = redis.Redis.from_url(f"{REDIS_URL}/{number}", socket_timeout=5)
        try:
            claimed = client.get(CLAIM_KEY)
            owner = claimed.decode() if isinstance(claimed, bytes) else claimed
            if owner is not None and _abandoned(str(owner)):
                client.flushdb()
        except redis.ResponseError:
            break
        finally:
            client.close()
    for folder in Path(tempfile.gettempdir()).glob("batchcode-stack-*"):
        mark = folder / "owner"
        with contextlib.suppress(OSError):
            if mark.is_file() and _abandoned(mark.read_text().strip()):
                shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Resources:
    """Names and ports of one stack; unique per run."""

    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    api_port: int = field(default_factory=free_port)
    emulator_port: int = field(default_factory=free_port)
    scheduler_health_port: int = field(default_factory=free_port)
    worker_log_port: int = field(default_factory=free_port)
    trigger_log_port: int = field(default_factory=free_port)
    redis_db: int | None = None
    fernet_key: str = field(default_factory=lambda: _fernet_key())
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    client_id: str = "stack-client"
    client_secret: str = field(default_factory=lambda: "stack-secret-" + secrets.token_hex(8))

    @property
    def metadata_db(self) -> str:
        """Airflow's metadata database."""
        return f"batchcode_stack_meta_{self.suffix}"

    @property
    def warehouse_db(self) -> str:
        """The warehouse database (source table and coded output)."""
        return f"batchcode_stack_wh_{self.suffix}"


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()
