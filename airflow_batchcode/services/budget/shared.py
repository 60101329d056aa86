"""The Redis :class:`~.ledger.Ledger`: one budget for every process naming the same ``budget_url``.

Each question is one Lua script, so it is atomic however many workers and triggerers ask at
once, and it reads Redis's clock (``TIME``), so processes on machines with skewed clocks still
space their requests by the same clock. Keys, under the account's prefix: ``:slot`` (the next
free request slot), ``:hold`` (refuse until), ``:count:<window start>`` (requests counted in
that window, expiring after it), ``:open`` (a sorted set of open operations by last poll) and
``:ops`` (requests counted per operation, for run summaries).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from airflow_batchcode.services.budget.ledger import Grant
from airflow_batchcode.services.budget.settings import BudgetSettings

OPEN_TTL = 3600.0
"""An operation not polled for this long no longer counts as open."""

_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval, quota, length = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local reserve, poll = tonumber(ARGV[4]), ARGV[5] == '1'
local guard = tonumber(ARGV[7])
local hold = tonumber(redis.call('GET', KEYS[2]) or '0')
if now < hold then
  return {'0', tostring(hold - now), '0', tostring(math.floor(now / length) * length + length), 'hold'}
end
-- a request counts in the window it is sent in, and none is sent in the guard before a reset
local slot = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'))
local start = math.floor(slot / length) * length
local reset = start + length
if reset - slot < guard then
  slot = reset + guard / 2
  start = reset
  reset = start + length
end
local count_key = KEYS[3] .. ':' .. string.format('%d', start)
local used = tonumber(redis.call('GET', count_key) or '0')
if quota > 0 then
  local limit = quota
  if poll then limit = quota - reserve end
  if used >= limit then
    local reason = 'quota'
    if poll and used < quota then reason = 'reserve' end
    return {'0', tostring(reset - now), tostring(used), tostring(reset), reason}
  end
end
if interval > 0 then
  redis.call('SET', KEYS[1], tostring(slot + interval), 'PX', math.ceil((slot + interval - now) * 1000) + 1000)
end
used = redis.call('INCR', count_key)
redis.call('EXPIRE', count_key, math.ceil(reset - now) + 60)
if ARGV[6] ~= '' then
  redis.call('HINCRBY', KEYS[4], ARGV[6], 1)
  redis.call('EXPIRE', KEYS[4], math.ceil(length) + 86400)
end
return {'1', tostring(slot - now), tostring(used), tostring(reset), ''}
"""

_HOLD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local untl = now + tonumber(ARGV[1])
local hold = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > hold then
  redis.call('SET', KEYS[1], tostring(untl), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
end
return tostring(math.max(untl, hold))
"""

_PEEK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local length = tonumber(ARGV[1])
local start = math.floor(now / length) * length
local used = tonumber(redis.call('GET', KEYS[1] .. ':' .. string.format('%d', start)) or '0')
return {tostring(used), tostring(start + length)}
"""

_OPEN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if ARGV[2] == '1' then redis.call('ZADD', KEYS[1], now, ARGV[1]) else redis.call('ZREM', KEYS[1], ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])))
return redis.call('ZCARD', KEYS[1])
"""

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def redis_client(url: str) -> Any:
    """One Redis client per URL in the process, with short timeouts so an outage is noticed quickly."""
    import redis

    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = redis.Redis.from_url(
                url, socket_connect_timeout=1.0, socket_timeout=2.0, health_check_interval=30
            )
        return client


class RedisLedger:
    """A :class:`~.ledger.Ledger` in Redis, shared by every process with the same URL and prefix.

    Every method raises the ``redis`` package's errors when Redis cannot be reached; the
    :class:`~.budget.Budget` then falls back to its per-process ledger.
    """

    def __init__(self, settings: BudgetSettings, client: Any) -> None:
        self.settings = settings
        base = settings.redis_key
        self.keys = {
            "slot": f"{base}:slot",
            "hold": f"{base}:hold",
            "count": f"{base}:count",
            "open": f"{base}:open",
            "ops": f"{base}:ops",
        }
        self._client = client
        self._take = client.register_script(_TAKE)
        self._hold = client.register_script(_HOLD)
        self._peek = client.register_script(_PEEK)
        self._open = client.register_script(_OPEN)

    def take(self, now: float, *, poll: bool, operation: str | None = None) -> Grant:
        s = self.settings
        granted, delay, used, reset, reason = self._take(
            keys=[self.keys["slot"], self.keys["hold"], self.keys["count"], self.keys["ops"]],
            args=[
                *(repr(s.interval), s.quota, repr(s.window.length), s.reserve),
                *("1" if poll else "0", operation or "", repr(s.window.guard)),
            ],
        )
        return Grant(granted == b"1", float(delay), int(float(used)), float(reset), reason.decode())

    def hold(self, until: float) -> None:
        self._hold(keys=[self.keys["hold"]], args=[repr(max(0.0, until - time.time()))])

    def peek(self, now: float) -> tuple[int, float]:
        used, reset = self._peek(keys=[self.keys["count"]], args=[repr(self.settings.window.length)])
        return int(float(used)), float(reset)

    def touch(self, operation: str, *, open_: bool) -> int:
        """Mark ``operation`` open (polled now) or closed; return how many operations are open."""
        return int(self._open(keys=[self.keys["open"]], args=[operation, "1" if open_ else "0", repr(OPEN_TTL)]))

    def counts(self, operations: list[str]) -> list[int]:
        if not operations:
            return []
        return [int(value or 0) for value in self._client.hmget(self.keys["ops"], operations)]

    def delete(self, client: Any) -> None:
        """Remove every key of this account (tests)."""
        names = [key for pattern in (f"{self.settings.redis_key}:*",) for key in client.scan_iter(pattern)]
        if names:
            client.delete(*names)
