"""The embedded Redis (REDIS_URL unset) stops when its owner says so, even with other clients still connected."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from jobs.transport import connections
from jobs.transport.connections import redis_address


def test_stop_embedded_redis_stops_the_server_despite_a_lingering_client(settings: Any, tmp_path: Path) -> None:
    settings.JOBS = {**settings.JOBS, "REDIS_URL": None, "EMBEDDED_REDIS_PATH": str(tmp_path / "redis.db")}
    conn = connections.get_connection()
    assert conn.ping()
    # The channel layer's address for it names the same client: live frames share its connections.
    assert connections.connection_for_url(redis_address()) is conn
    server = connections._embedded_servers[str(tmp_path / "redis.db")]
    pid, registry_file = server.pid, Path(server.settingregistryfile)
    assert psutil.pid_exists(pid) and registry_file.exists()

    # Another process stays connected, like a killed child whose socket the server has not reaped yet.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, redis; redis.Redis(unix_socket_path=sys.argv[1]).ping(); print('connected', "
            "flush=True); time.sleep(60)",
            server.socket_file,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "connected"
        assert connections.stop_embedded_redis(wait=0.3) is True
        deadline = time.monotonic() + 10
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the embedded redis-server is still running"
            time.sleep(0.05)
        assert not registry_file.exists()
        assert connections._embedded_servers == {}
        assert conn not in connections._connections.values()  # under neither of its names
        assert connections.stop_embedded_redis() is False  # nothing left to stop
    finally:
        holder.kill()
        holder.communicate()
