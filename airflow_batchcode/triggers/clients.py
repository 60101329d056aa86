"""The triggers' async clients: one per connection on each event loop, shared by the triggers using it.

A triggerer runs hundreds of triggers on one event loop. Each used to read its connection and
build its own client (settings, transport, closures: about a dozen objects that every full
garbage collection walks, for as long as the trigger waits). Triggers of one connection on one
loop now hold one :class:`SharedClient`:

* the first trigger to start reads the connection and builds the client; triggers starting
  meanwhile wait for that read instead of each reading the connection;
* every trigger holds a share (:func:`acquire`) and gives it back when it ends (:func:`release`);
  the last to give it back closes the client;
* a connection edited in Airflow reaches new triggers within :data:`RECHECK_SECONDS`: a client is
  handed out without reading the connection again only that long after it was last read. The
  next trigger after that reads it: the same settings keep the client, changed ones (a rotated
  secret, another host) build a new client for it and the triggers after it. A trigger already
  waiting keeps the client it started with, as it always kept the connection it read at its start;
* a failed read or build is not kept: the triggers that waited on it each end with its error,
  and the next trigger to start tries again. Nothing one trigger's polls do changes the client
  for the others (a rejected token is dropped from the token cache the clients of one account
  already shared).
"""

from __future__ import annotations

import asyncio
import weakref

from airflow_batchcode.hooks.batchcode import BatchCodeHook
from airflow_batchcode.services.base import AsyncBatchCodeClient
from airflow_batchcode.services.registry import ServiceConfig

RECHECK_SECONDS = 60.0
"""How long after a connection was read its client is handed to new triggers without reading it again."""


class SharedClient:
    """One connection's client on one event loop, and how many triggers hold it.

    :param client: the async client.
    :param config: the connection it was built from.
    :param checked: loop time at which the connection was last read and found unchanged.
    """

    __slots__ = ("_slot", "checked", "client", "closed", "config", "users")

    def __init__(self, client: AsyncBatchCodeClient, config: ServiceConfig, checked: float, slot: _Slot) -> None:
        self.client = client
        self.config = config
        self.checked = checked
        self.users = 0
        self.closed = False
        self._slot = slot


class _Reading:
    """A read of the connection under way: triggers starting meanwhile wait for it and take its outcome."""

    __slots__ = ("done", "error", "shared")

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.error: Exception | None = None
        self.shared: SharedClient | None = None


class _Slot:
    """One connection on one loop: the client new triggers get, and the read under way, if any."""

    __slots__ = ("current", "reading")

    def __init__(self) -> None:
        self.current: SharedClient | None = None
        self.reading: _Reading | None = None


_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Slot]] = weakref.WeakKeyDictionary()


async def acquire(conn_id: str) -> SharedClient:
    """A share of the running loop's client for ``conn_id`` (read and built when needed); give it
    back with :func:`release`.

    :raises Exception: what reading the connection or building its client raised.
    """
    loop = asyncio.get_running_loop()
    slot = _slots.setdefault(loop, {}).setdefault(conn_id, _Slot())
    while True:
        current = slot.current
        if current is not None and loop.time() - current.checked < RECHECK_SECONDS:
            current.users += 1
            return current
        reading = slot.reading
        if reading is None:
            break
        await reading.done.wait()
        if reading.error is not None:
            raise reading.error
        if reading.shared is not None and not reading.shared.closed:
            reading.shared.users += 1
            return reading.shared
        # the trigger reading it was cancelled: look again (this one may read it now)
    reading = slot.reading = _Reading()
    try:
        shared = reading.shared = await _read(conn_id, slot, current, loop)
    except Exception as exc:
        reading.error = exc
        raise
    finally:
        slot.reading = None
        reading.done.set()
    shared.users += 1
    try:  # let the triggers woken above take their shares before this one can give its own back
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        await release(shared)
        raise
    return shared


async def _read(
    conn_id: str, slot: _Slot, current: SharedClient | None, loop: asyncio.AbstractEventLoop
) -> SharedClient:
    """The connection read now: ``current`` when it is unchanged, else a new client, which new triggers get."""
    hook = BatchCodeHook(conn_id)
    config = await hook.aget_config()
    if current is not None and current is slot.current and config == current.config:
        current.checked = loop.time()
        return current
    shared = SharedClient(await hook.get_async_client(config), config, loop.time(), slot)
    slot.current = shared  # a client it replaces stays with the triggers holding it; the last one closes it
    return shared


async def release(shared: SharedClient) -> None:
    """Give back a share :func:`acquire` handed out; the last share closes the client."""
    shared.users -= 1
    if shared.users > 0 or shared.closed:
        return
    shared.closed = True
    if shared._slot.current is shared:
        shared._slot.current = None
    await shared.client.aclose()


def shared_client_count(loop: asyncio.AbstractEventLoop) -> int:
    """How many clients triggers on ``loop`` can be handed now (for tests and benchmarks)."""
    return sum(1 for slot in _slots.get(loop, {}).values() if slot.current is not None)
