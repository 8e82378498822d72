"""The submission throttle: JOBS["SUBMIT_RATE"] per user, read at request time so override_settings works."""

from __future__ import annotations

from rest_framework.throttling import UserRateThrottle

from ..conf import jobs_settings


class SubmitRateThrottle(UserRateThrottle):
    """At most JOBS["SUBMIT_RATE"] submissions per user ("120/minute"; None: unlimited), 429 with Retry-After.

    Counts live in Django's default cache: give every web process one shared cache (Redis, memcached) so
    that the limit holds across processes, as with any DRF throttle.
    """

    scope = "jobs_submit"

    def get_rate(self) -> str | None:
        return jobs_settings().SUBMIT_RATE
