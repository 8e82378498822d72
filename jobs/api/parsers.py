"""A JSON parser that answers every malformed or oversized body with a 4xx, whatever the project's settings."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.json import strict_constant


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "request_too_large"


class StrictJSONParser(BaseParser):
    """A JSON parser hardened for input from anyone.

    - Bodies above DATA_UPLOAD_MAX_MEMORY_SIZE are refused with a JSON 413. Not a JSONParser subclass on
      purpose: for those DRF reads ``request.body`` first, and Django answers an oversized one with a bare
      HTML 400. Here DRF hands over the raw stream and at most limit + 1 bytes of it are read.
    - NaN and Infinity are refused whatever REST_FRAMEWORK["STRICT_JSON"] says: they are not JSON and
      PostgreSQL's jsonb rejects them.
    - Nesting too deep for Python's parser is a 400, not a RecursionError.
    """

    media_type = "application/json"
    renderer_class = JSONRenderer  # what the browsable API's raw-data form posts with

    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        raw = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(raw) > limit:
            raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
        try:
            # bytes.decode, not codecs.decode: a charset naming a non-text codec (zlib, ...) is a LookupError.
            return json.loads(raw.decode(encoding), parse_constant=strict_constant)
        except (ValueError, LookupError, RecursionError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
