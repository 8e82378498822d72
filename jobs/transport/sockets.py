"""Open websockets per user, counted in Redis so that the cap (JOBS["MAX_SOCKETS_PER_USER"]) holds across every
ASGI process. Each socket is a member of its user's sorted set, scored with the moment it expires: a live socket
renews its entry at every recheck, and an ASGI server killed without closing its sockets leaks nothing for long.
"""

from __future__ import annotations

import time
from typing import Any

from ..conf import jobs_settings
from .connections import get_connection
from .scripts import run

# Drop the expired entries, then add this socket if the user is under the cap. 1: taken, 0: at the cap.
ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) == false and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIREAT', KEYS[1], math.floor(tonumber(ARGV[2]) * 1000) + 1)
return 1
"""

# Renew an entry that is still there (XX: a socket whose entry expired meanwhile is not counted again here).
RENEW = """
local renewed = redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[1], ARGV[2])
local latest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if latest[2] then
  redis.call('PEXPIREAT', KEYS[1], math.floor(tonumber(latest[2]) * 1000) + 1)
end
return renewed
"""


def _key(user_id: Any) -> str:
    return f"{jobs_settings().QUEUE_PREFIX}:sockets:{user_id}"


def acquire_socket(user_id: Any, socket_id: str, *, limit: int, ttl: float) -> bool:
    """Count ``socket_id`` as one of the user's open sockets for ``ttl`` seconds; False when ``limit`` are open."""
    now = time.time()
    return bool(run(get_connection(), ACQUIRE, [_key(user_id)], [now, now + ttl, socket_id, limit]))


def renew_socket(user_id: Any, socket_id: str, *, ttl: float) -> None:
    """Keep ``socket_id`` counted for another ``ttl`` seconds."""
    run(get_connection(), RENEW, [_key(user_id)], [time.time() + ttl, socket_id])


def release_socket(user_id: Any, socket_id: str) -> None:
    get_connection().zrem(_key(user_id), socket_id)


def count_sockets(user_id: Any) -> int:
    """Open sockets of the user that have not expired."""
    return int(get_connection().zcount(_key(user_id), time.time(), "+inf"))
