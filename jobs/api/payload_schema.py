"""JSON Schema (draft 2020-12) for a job type's payload, derived from its DRF serializer.

Not drf-spectacular's field mapping: that one emits OpenAPI 3.0 schema objects (``nullable``), while job-types/
promises plain JSON Schema that any client-side validator accepts. The schema names the canonical JSON types;
DRF itself is more lenient on input (it takes "5" for an integer), so the server stays the final judge.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from django.core import validators as django_validators
from django.core.validators import MaxValueValidator, MinValueValidator
from rest_framework import serializers
from rest_framework.fields import empty

JsonSchema = dict[str, Any]
AnyField = serializers.Field[Any, Any, Any, Any]

_STRING_FORMATS: tuple[tuple[type[AnyField], str], ...] = (
    (serializers.UUIDField, "uuid"),
    (serializers.DateTimeField, "date-time"),
    (serializers.DateField, "date"),
    (serializers.TimeField, "time"),
    (serializers.DurationField, "duration"),
)


def payload_schema(serializer_class: type[serializers.BaseSerializer[Any]] | None) -> JsonSchema:
    """The JSON Schema a payload must match; without a serializer, any JSON object."""
    if serializer_class is None:
        return {"type": "object"}
    schema = field_schema(serializer_class())
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def field_schema(field: AnyField) -> JsonSchema:
    """The schema of one serializer field (nested serializers included); unknown fields accept any value."""
    schema = _base_schema(field)
    if field.allow_null:
        schema = _nullable(schema)
    if field.default is not empty and not callable(field.default) and _is_json(field.default):
        schema["default"] = field.default
    if field.help_text:
        schema["description"] = str(field.help_text)
    return schema


def _base_schema(field: AnyField) -> JsonSchema:
    if isinstance(field, serializers.ListSerializer):
        return _array(field_schema(field.child), field) if field.child is not None else {"type": "array"}
    if isinstance(field, serializers.Serializer):
        return _object(field)
    if isinstance(field, serializers.BooleanField):
        return {"type": "boolean"}
    if isinstance(field, serializers.MultipleChoiceField):
        items = {"enum": list(field.choices)}
        return {"type": "array", "items": items, "uniqueItems": True, **({} if field.allow_empty else {"minItems": 1})}
    if isinstance(field, serializers.ChoiceField):
        return {"enum": list(field.choices)}
    if isinstance(field, serializers.IntegerField):
        return _bounded({"type": "integer"}, field)
    if isinstance(field, serializers.FloatField):
        return _bounded({"type": "number"}, field)
    if isinstance(field, serializers.DecimalField):
        # DRF takes a decimal as a JSON number or as a numeric string.
        return _bounded({"type": ["number", "string"]}, field)
    for field_class, string_format in _STRING_FORMATS:
        if isinstance(field, field_class):
            return {"type": "string", "format": string_format}
    if isinstance(field, serializers.EmailField):
        return {**_string(field), "format": "email"}
    if isinstance(field, serializers.URLField):
        return {**_string(field), "format": "uri"}
    if isinstance(field, serializers.CharField):
        return _string(field)
    if isinstance(field, serializers.ListField):
        return _array(field_schema(field.child), field)
    if isinstance(field, serializers.DictField):
        return {"type": "object", "additionalProperties": field_schema(field.child)}
    return {}  # JSONField, custom fields: any JSON value


def _object(serializer: serializers.Serializer[Any]) -> JsonSchema:
    properties: dict[str, JsonSchema] = {}
    required: list[str] = []
    for name, field in serializer.fields.items():
        if field.read_only:
            continue
        properties[name] = field_schema(field)
        if field.required:
            required.append(name)
    schema: JsonSchema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _string(field: serializers.CharField) -> JsonSchema:
    schema: JsonSchema = {"type": "string"}
    if not field.allow_blank:
        schema["minLength"] = 1
    for validator in field.validators:
        if isinstance(validator, django_validators.MaxLengthValidator):
            schema["maxLength"] = validator.limit_value
        elif isinstance(validator, django_validators.MinLengthValidator):
            schema["minLength"] = validator.limit_value
        elif type(validator) is django_validators.RegexValidator and not validator.inverse_match:
            # Subclasses (URLValidator, ...) carry regexes written for Python alone: only plain ones are kept.
            regex = validator.regex if isinstance(validator.regex, re.Pattern) else re.compile(validator.regex)
            if (pattern := _ecma_pattern(regex)) is not None:
                schema["pattern"] = pattern
    return schema


def _ecma_pattern(regex: re.Pattern[str]) -> str | None:
    """A Python regex as a JSON Schema (ECMA-262) pattern, or None where the dialects part ways."""
    if regex.flags & (re.IGNORECASE | re.MULTILINE | re.DOTALL | re.VERBOSE):
        return None  # a pattern keyword has no room for flags
    translated = regex.pattern.replace(r"\A", "^").replace(r"\Z", "$").replace("(?P<", "(?<")
    if "(?P" in translated or re.search(r"\(\?[aiLmsux]", translated):
        return None  # named back-references and inline flags have no ECMA spelling
    return translated


def _bounded(schema: JsonSchema, field: AnyField) -> JsonSchema:
    for validator in field.validators:
        for validator_class, keyword in ((MaxValueValidator, "maximum"), (MinValueValidator, "minimum")):
            if isinstance(validator, validator_class) and isinstance(validator.limit_value, int | float | Decimal):
                limit = validator.limit_value
                # A Decimal bound is not JSON; as a float it is close enough for a client-side check.
                schema[keyword] = float(limit) if isinstance(limit, Decimal) else limit
    return schema


def _array(items: JsonSchema, field: AnyField) -> JsonSchema:
    schema: JsonSchema = {"type": "array", "items": items}
    min_length = getattr(field, "min_length", None)
    max_length = getattr(field, "max_length", None)
    if not getattr(field, "allow_empty", True):
        min_length = max(1, min_length or 0)
    if min_length is not None:
        schema["minItems"] = min_length
    if max_length is not None:
        schema["maxItems"] = max_length
    return schema


def _nullable(schema: JsonSchema) -> JsonSchema:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    if isinstance(kind, list):
        return {**schema, "type": [*kind, "null"]}
    if "enum" in schema:
        return {**schema, "enum": [*schema["enum"], None]}
    return schema  # already accepts anything, null included


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
