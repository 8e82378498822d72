"""The tables as migrations leave them: every index earns its cost on each write."""

from __future__ import annotations

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


def index_columns(table: str) -> list[list[str]]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return [c["columns"] for c in constraints.values() if c["index"] and not c["primary_key"]]


@pytest.mark.parametrize(("table", "column"), [("jobs_joblog", "owner_id"), ("jobs_jobevent", "job_id")])
def test_schema__a_foreign_key_led_by_a_composite_index_has_no_index_of_its_own(table, column):
    indexes = index_columns(table)
    assert [column] not in indexes, indexes
    # The composite that serves its lookups (and the cascades on delete) is there.
    assert any(len(columns) > 1 and columns[0] == column for columns in indexes), indexes
