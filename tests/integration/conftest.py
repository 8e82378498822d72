"""Fixtures shared by the integration tests of the REST API."""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import make_user


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
