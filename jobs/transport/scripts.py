"""The Lua scripts that write rq's keys in one round trip, where rq's own API would take one per job.

Each does what an rq call does (named beside it), for many jobs at once. tests/integration/test_rq_format.py pins
what they write against what the installed rq writes, so an rq upgrade that changes its format fails the suite.
"""

from __future__ import annotations

from typing import Any

from redis import Redis

# Queue.enqueue_many for ready jobs: the job hash as Job.save() writes it, the list push, the queue's entry in
# rq:queues. The hash's constant fields come from a job rq built once per queue and options (transport.queues);
# only the id, the call data, the description and the times differ from job to job.
PUSH = """
local queues_key, queue_key, now = ARGV[1], ARGV[2], ARGV[3]
local fields = cjson.decode(ARGV[4])
local n = #fields
fields[n + 1], fields[n + 2], fields[n + 3], fields[n + 4] = 'created_at', now, 'enqueued_at', now
fields[n + 5], fields[n + 7] = 'data', 'description'
redis.call('SADD', queues_key, queue_key)
local ids = {}
for i = 5, #ARGV, 3 do
    local key = 'rq:job:' .. ARGV[i]
    fields[n + 6], fields[n + 8] = ARGV[i + 1], ARGV[i + 2]
    redis.call('HSET', key, unpack(fields))
    redis.call('PERSIST', key)  -- as Job.cleanup(ttl=None): a job pushed again must not expire
    ids[#ids + 1] = ARGV[i]
end
redis.call('RPUSH', queue_key, unpack(ids))
return #ids
"""
PUSH_CHUNK = 1000  # jobs per call: Lua's unpack() takes a few thousand values at most

# Worker.dequeue_job_and_maintain_ttl and prepare_execution, for a batch: pop in strict priority order (KEYS),
# skipping paused queues; mark each job hash started; record the execution (its hash, the job's and the worker's
# execution indexes, its queue's StartedJobRegistry), which is how rq's tooling finds a worker's current jobs; and
# return the call data and callbacks, which transport.queues checks before anything runs. It also
# sets each job's liveness key, so a worker that dies at any point after the pop leaves a trace the reconciler
# repairs, and hands a job that the caller's BLPOP popped from a queue paused meanwhile back to its head.
CLAIM = """
local wanted = tonumber(ARGV[1])
local worker, started_at, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local alive_prefix, alive_ms, paused_key, execution = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local first_id, first_index = ARGV[9], tonumber(ARGV[10])
local claimed = {}
local function claim(id)
    local key = 'rq:job:' .. id
    local fields = redis.call('HMGET', key, 'origin', 'timeout', 'rate_limit_key', 'description', 'data',
        'success_callback_name', 'failure_callback_name', 'stopped_callback_name')
    if not fields[1] then return end  -- deleted while it waited: rq's dequeue skips these too
    redis.call('HSET', key, 'status', 'started', 'started_at', started_at, 'last_heartbeat', started_at,
        'worker_name', worker)
    redis.call('PERSIST', key)
    local timeout = tonumber(fields[2]) or 180
    local ttl = timeout + 60
    redis.call('ZADD', 'rq:wip:' .. fields[1], now + ttl, id .. ':' .. execution)
    local execution_key = 'rq:execution:' .. id .. ':' .. execution
    redis.call('HSET', execution_key, 'id', execution, 'job_id', id, 'created_at', ARGV[4], 'last_heartbeat',
        ARGV[4], 'worker_name', worker)
    redis.call('EXPIRE', execution_key, ttl)
    redis.call('ZADD', 'rq:executions:' .. id, now + ttl + 60, execution)
    redis.call('EXPIRE', 'rq:executions:' .. id, ttl + 60)
    redis.call('SADD', 'rq:worker:' .. worker .. ':executions', id .. ':' .. execution)
    redis.call('EXPIRE', 'rq:worker:' .. worker .. ':executions', ttl + 60)
    redis.call('SET', alive_prefix .. id, '1', 'PX', alive_ms)
    local callbacks = (fields[6] or '') .. (fields[7] or '') .. (fields[8] or '')
    claimed[#claimed + 1] = {id, fields[1], tostring(timeout), fields[3] or '', fields[4] or '', fields[5] or '',
        callbacks}
end
if first_id ~= '' then
    if redis.call('SISMEMBER', paused_key, ARGV[10 + first_index]) == 1 then
        redis.call('LPUSH', KEYS[first_index], first_id)
        return claimed
    end
    claim(first_id)
end
for i, queue_key in ipairs(KEYS) do
    if #claimed >= wanted then break end
    if redis.call('SISMEMBER', paused_key, ARGV[10 + i]) == 0 then
        while #claimed < wanted do
            local id = redis.call('LPOP', queue_key)
            if not id then break end
            claim(id)
        end
    end
end
return claimed
"""

# Worker.handle_job_success (with its cleanup_execution) for jobs with no dependents, repeats or concurrency slot,
# for a batch.
FINISH = """
local ended_at, now, worker_key, alive_prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local count, working = 0, 0
for i = 5, #ARGV, 5 do
    local id, origin, ttl, execution = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
    local key = 'rq:job:' .. id
    redis.call('HSET', key, 'status', 'finished', 'ended_at', ended_at)
    redis.call('EXPIRE', key, ttl)
    redis.call('ZREM', 'rq:wip:' .. origin, id .. ':' .. execution)
    redis.call('DEL', 'rq:execution:' .. id .. ':' .. execution)
    redis.call('ZREM', 'rq:executions:' .. id, execution)
    redis.call('SREM', worker_key .. ':executions', id .. ':' .. execution)
    redis.call('ZADD', 'rq:finished:' .. origin, now + ttl, id)
    redis.call('DEL', alive_prefix .. id)
    count = count + 1
    working = working + tonumber(ARGV[i + 4])
end
redis.call('HINCRBY', worker_key, 'successful_job_count', count)
redis.call('HINCRBYFLOAT', worker_key, 'total_working_time', working)
return count
"""

# Per-period rate limits ("N/s|m|h"), which rq lacks: a sliding-window log, at most N starts in any window of the
# period. Answers 0 when a start is granted, otherwise the milliseconds until the oldest start leaves the window.
ACQUIRE_START = """
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

_registered: dict[tuple[int, str], Any] = {}


def run(conn: Redis, source: str, keys: list[Any], args: list[Any]) -> Any:
    """Call ``source`` on ``conn``: sent once, then called by its SHA (EVALSHA; sent again after a SCRIPT FLUSH)."""
    key = (id(conn), source)
    script = _registered.get(key)
    if script is None:
        script = _registered[key] = conn.register_script(source)
    return script(keys, args)
