"""Per-period rate limits ("N/s|m|h") shared by every worker through Redis; rq lacks these."""

from __future__ import annotations

import uuid

from .conf import jobs_settings
from .queues import get_connection
from .registry import RateLimit

# Sliding-window log: at most N starts in any window of the period. Answers 0 when a start is granted,
# otherwise the milliseconds until the oldest start leaves the window.
_ACQUIRE = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
    redis.call('ZADD', KEYS[1], now, ARGV[4])
    redis.call('PEXPIRE', KEYS[1], window)
    return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""


def acquire_start(job_type_name: str, limit: RateLimit) -> float:
    """Take a start slot; 0.0 when granted, else seconds to wait before trying again."""
    conn = get_connection()
    # Redis's clock, not ours: every worker host must agree on the window.
    seconds, micros = conn.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    key = f"{jobs_settings().QUEUE_PREFIX}:rate:{job_type_name}"
    wait_ms = conn.eval(_ACQUIRE, 1, key, now_ms, limit.period_seconds * 1000, limit.count, uuid.uuid4().hex)
    return int(wait_ms) / 1000.0
