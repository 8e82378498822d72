"""job-types/ describes payloads as JSON Schema derived from the type's DRF serializer; and its settings check."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from rest_framework import serializers

from jobs.api.payload_schema import field_schema, payload_schema
from jobs.checks import check_settings
from tests.testapp.job_types import GreetingPayload


class Address(serializers.Serializer[Any]):
    city = serializers.CharField()
    zip = serializers.RegexField(r"^\d{5}\Z", required=False)


class Everything(serializers.Serializer[Any]):
    email = serializers.EmailField(help_text="Where the report goes.")
    site = serializers.URLField(required=False)
    slug = serializers.SlugField(required=False)
    caseless = serializers.RegexField(re.compile("abc", re.IGNORECASE), required=False)
    size = serializers.ChoiceField(choices=["s", "m", "l"], default="m")
    tags = serializers.MultipleChoiceField(choices=["a", "b"], required=False)
    ratio = serializers.FloatField(min_value=0, max_value=1, required=False)
    price = serializers.DecimalField(max_digits=6, decimal_places=2, min_value=Decimal("0.50"), required=False)
    when = serializers.DateTimeField(required=False)
    day = serializers.DateField(required=False)
    id = serializers.UUIDField(required=False)
    flag = serializers.BooleanField(required=False)
    note = serializers.CharField(allow_null=True, allow_blank=True, required=False)
    rows = serializers.ListField(child=serializers.IntegerField(), min_length=1, max_length=3, required=False)
    extra = serializers.DictField(child=serializers.CharField(), required=False)
    anything = serializers.JSONField(required=False)
    address = Address(required=False)
    addresses = Address(many=True, required=False)
    computed = serializers.CharField(read_only=True)


def test_payload_schema__no_serializer_means_any_object():
    assert payload_schema(None) == {"type": "object"}


def test_payload_schema__greeting_serializer():
    schema = payload_schema(GreetingPayload)
    assert schema == {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 20},
            "times": {"type": "integer", "minimum": 1, "maximum": 5, "default": 1},
        },
        "required": ["name"],
    }


def test_payload_schema__is_valid_json_schema_that_agrees_with_the_serializer():
    schema = payload_schema(Everything)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    good = [
        {"email": "a@example.com"},
        {"email": "a@example.com", "size": "l", "rows": [1, 2], "address": {"city": "Oslo", "zip": "01234"}},
        {"email": "a@example.com", "note": None, "addresses": [{"city": "Rome"}], "extra": {"k": "v"}},
    ]
    bad = [
        {},
        {"email": "a@example.com", "size": "xl"},
        {"email": "a@example.com", "rows": []},
        {"email": "a@example.com", "rows": [1, 2, 3, 4]},
        {"email": "a@example.com", "ratio": 2},
        {"email": "a@example.com", "address": {"zip": "01234"}},
        {"email": "a@example.com", "address": {"city": "Oslo", "zip": "1234"}},
        {"email": "a@example.com", "flag": "maybe"},
    ]
    for payload in good:
        assert not list(validator.iter_errors(payload)), payload
        assert Everything(data=payload).is_valid(), payload
    for payload in bad:
        assert list(validator.iter_errors(payload)), payload
        assert not Everything(data=payload).is_valid(), payload


def test_payload_schema__field_details():
    fields = payload_schema(Everything)["properties"]
    assert fields["email"] == {
        "type": "string",
        "minLength": 1,
        "format": "email",
        "description": "Where the report goes.",
    }
    assert fields["site"]["format"] == "uri"
    assert fields["slug"]["pattern"] == "^[-a-zA-Z0-9_]+$"
    assert "pattern" not in fields["caseless"]  # flags cannot be carried by a pattern keyword
    assert fields["size"] == {"enum": ["s", "m", "l"], "default": "m"}
    assert fields["tags"] == {"type": "array", "items": {"enum": ["a", "b"]}, "uniqueItems": True}
    assert fields["price"] == {"type": ["number", "string"], "minimum": 0.5}
    assert fields["when"] == {"type": "string", "format": "date-time"}
    assert fields["id"] == {"type": "string", "format": "uuid"}
    assert fields["note"] == {"type": ["string", "null"]}
    assert fields["extra"] == {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}}
    assert fields["anything"] == {}
    assert fields["address"]["properties"]["zip"]["pattern"] == r"^\d{5}$"
    assert fields["addresses"]["type"] == "array" and fields["addresses"]["items"]["required"] == ["city"]
    assert "computed" not in fields


def test_field_schema__nullable_choice_and_unknown_field():
    assert field_schema(serializers.ChoiceField(choices=["a"], allow_null=True)) == {"enum": ["a", None]}
    assert field_schema(serializers.HiddenField(default=1)) == {"default": 1}


@pytest.mark.parametrize("rate", ["120/minute", "5/s", "1000/hour", "1/day", None])
def test_checks__submit_rate_accepted(rate, settings):
    settings.JOBS = {"SUBMIT_RATE": rate}
    assert check_settings(None) == []


@pytest.mark.parametrize("rate", ["fast", "120", "120/fortnight", "0/minute", 120, "-1/s"])
def test_checks__bad_submit_rate_reported(rate, settings):
    settings.JOBS = {"SUBMIT_RATE": rate}
    assert [e.id for e in check_settings(None)] == ["jobs.E005"]
