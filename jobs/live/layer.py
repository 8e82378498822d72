"""The channel layer for live progress: channels-redis pub/sub on the same Redis the jobs use.

Configure it once; with no ``hosts`` it follows ``JOBS["REDIS_URL"]``, and the embedded Redis when that is unset::

    CHANNEL_LAYERS = {"default": {"BACKEND": "jobs.live.layer.JobsChannelLayer"}}

Pub/sub suits progress fan-out: a group send is one PUBLISH whatever the number of listeners, and each web process
hands the message to its own connected sockets. Nothing is stored, which is fine: a client that connects gets a
snapshot from SQL first, and SQL is the source of truth.
"""

from __future__ import annotations

from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer

from ..transport.connections import layer_host_options, redis_address

# A command on a connection Redis dropped (restarted) reconnects and, for the subscriber, subscribes again to
# every channel it had (redis-py's PubSub does on reconnect), then runs again: waits of 0.2, 0.4, 0.8, 1 and 1
# seconds, about 3.4 s in all, before the error reaches the socket's consumer.
RECONNECT_ATTEMPTS = 5


class JobsChannelLayer(RedisPubSubChannelLayer):  # type: ignore[misc]
    def __init__(self, hosts: list[Any] | None = None, prefix: str = "asgi", **kwargs: Any) -> None:
        super().__init__(prefix=prefix, **kwargs)
        self.prefix = prefix
        self.configured_hosts = hosts

    @property
    def hosts(self) -> list[Any]:
        # Resolved when used, not when Django starts: the embedded server may not be up yet, and a changed
        # JOBS["REDIS_URL"] (override_settings in tests) is followed.
        return self.configured_hosts or [redis_address()]

    def _get_layer(self) -> Any:
        # channels-redis builds one connection set per event loop from these arguments.
        self._kwargs["hosts"] = [connection_options(host) for host in self.hosts]
        return super()._get_layer()

    def group_channel(self, group: str) -> str:
        """The Redis pub/sub channel a group send goes to (channels-redis's naming, kept in one place)."""
        return f"{self.prefix}__group__{group}"


def connection_options(host: Any) -> Any:
    """A redis:// or unix:// address as channels-redis's host options: the jobs' timeouts and keepalive, and a retry
    that reconnects. Without one, channels-redis's connections never retry: after Redis restarted, the idle
    subscriber connection (nobody listening, so nothing read on it) stays dead and the next socket's SUBSCRIBE fails
    on it, a 500 to the browser. Hosts given as options (dicts) are the project's and are kept as they are."""
    if not isinstance(host, str):
        return host
    return layer_host_options(host, reconnect_attempts=RECONNECT_ATTEMPTS)
