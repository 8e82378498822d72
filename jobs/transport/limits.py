"""Limits kept in Redis so that they hold across every web and worker process: a user's submission budget and a
user's running slots of a job type.

Both are small Lua scripts (transport.scripts.run): one round trip, and no other client sees a half-done count.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from ..conf import jobs_settings
from . import scripts
from .connections import get_connection
from .queues import alive_key

# A sliding-window log of one user's submissions: at most ``limit`` in any window of ``window`` ms. A request for
# ``n`` takes all n or none. Answers 0 when granted, otherwise the milliseconds until enough of the oldest leave
# the window (-1 when n alone is more than the limit: no wait would ever be enough).
TAKE_SUBMISSIONS = """
local window, limit, n, token = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if n > limit then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
if used + n <= limit then
    for i = 1, n do redis.call('ZADD', KEYS[1], now, token .. ':' .. i) end
    redis.call('PEXPIRE', KEYS[1], window)
    return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], used + n - limit - 1, used + n - limit - 1, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""

# One owner's running jobs of one type: a set of job ids, each held while its liveness key (set by the claim,
# refreshed by the worker's beat) lives, so a killed worker's slots free themselves once its keys lapse. Answers 1
# when ``job_id`` holds a slot (it may already hold one: a duplicate delivery), 0 when all ``cap`` are taken.
TAKE_USER_SLOT = """
local job_id, cap, alive_prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]
for _, held in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    if redis.call('EXISTS', alive_prefix .. held) == 0 then redis.call('SREM', KEYS[1], held) end
end
if redis.call('SISMEMBER', KEYS[1], job_id) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= cap then return 0 end
redis.call('SADD', KEYS[1], job_id)
redis.call('EXPIRE', KEYS[1], 86400)  -- an idle user's set goes; a busy one's is renewed by each start
return 1
"""

RATE_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_submit_rate(rate: str) -> tuple[int, int]:
    """DRF's rate syntax ("120/minute": only the unit's first letter counts) as (count, period seconds)."""
    count, unit = rate.split("/", 1)
    return int(count), RATE_UNIT_SECONDS[unit[0]]


def take_submissions(user_key: str, count: int, rate: str) -> float:
    """Charge ``count`` submissions to a user's JOBS["SUBMIT_RATE"] budget, all or none. 0.0 when granted, else the
    seconds to wait before trying again (-1.0: ``count`` is more than the whole budget). Raises TransportError."""
    limit, period = parse_submit_rate(rate)
    key = f"{jobs_settings().QUEUE_PREFIX}:submit-rate:{user_key}"
    args = [period * 1000, limit, count, uuid.uuid4().hex]
    wait = int(scripts.run(get_connection(), TAKE_SUBMISSIONS, [key], args))
    return -1.0 if wait < 0 else wait / 1000.0


def _user_slots_key(job_type: str, owner: str) -> str:
    return f"{jobs_settings().QUEUE_PREFIX}:user-slots:{job_type}:{owner}"


def take_user_slot(job_type: str, owner: str, job_id: str, cap: int) -> bool:
    """Take one of ``owner``'s ``cap`` running slots of ``job_type`` for ``job_id`` (a claimed job: its liveness key
    holds the slot); False when they are all taken. Raises TransportError."""
    args = [job_id, cap, alive_key("")]
    return bool(scripts.run(get_connection(), TAKE_USER_SLOT, [_user_slots_key(job_type, owner)], args))


def release_user_slots(held: Iterable[tuple[str, str, str]]) -> None:
    """Free the slots of these (job type, owner, job id); one round trip. Raises TransportError."""
    with get_connection().pipeline(transaction=False) as pipe:
        for job_type, owner, job_id in held:
            pipe.srem(_user_slots_key(job_type, owner), job_id)
        pipe.execute()
