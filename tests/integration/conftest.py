"""Fixtures shared by the integration tests of the REST API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache

from tests.factories import make_user


@pytest.fixture(autouse=True)
def fresh_throttle_counts() -> Iterator[None]:
    # Throttle history lives in the cache, which outlives each test's database.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def alice(transactional_db: None) -> Any:
    return make_user("alice")


@pytest.fixture
def bob(transactional_db: None) -> Any:
    return make_user("bob")


@pytest.fixture
def admin(transactional_db: None) -> Any:
    # A superuser: staff without the jobs permissions is a plain user (tests/integration/test_permissions.py).
    return make_user("admin", is_staff=True, is_superuser=True)
