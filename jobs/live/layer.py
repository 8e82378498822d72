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

from ..transport.connections import redis_address


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
        self._kwargs["hosts"] = self.hosts
        return super()._get_layer()

    def group_channel(self, group: str) -> str:
        """The Redis pub/sub channel a group send goes to (channels-redis's naming, kept in one place)."""
        return f"{self.prefix}__group__{group}"
