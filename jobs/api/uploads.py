"""``POST /api/uploads/`` and ``GET /api/uploads/{id}/``: files an API client sends for its jobs to read.

Storing, checking and reading uploads is jobs.uploads; this module is the HTTP side only.
"""

from __future__ import annotations

from typing import Any

from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema_field
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from .. import uploads
from ..access import may_see_all_jobs
from ..conf import jobs_settings
from ..exceptions import JobsError, UploadNotFound, UploadTooLarge, UploadTypeRefused
from ..models import Upload
from .views import ExceptionHandler, JobsAPIView, handle_error, openapi

# The upload errors that are not a plain 400; looked up along the exception's MRO, like views.HTTP_STATUS.
UPLOAD_STATUS: dict[type[JobsError], int] = {
    UploadTooLarge: status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    UploadTypeRefused: status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    UploadNotFound: status.HTTP_404_NOT_FOUND,
}


def handle_upload_error(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, JobsError):
        code = next((UPLOAD_STATUS[t] for t in type(exc).__mro__ if t in UPLOAD_STATUS), None)
        if code is not None:
            return Response({"detail": str(exc), "code": exc.code}, status=code)
    return handle_error(exc, context)


# A file in a request body is binary: drf-spectacular writes a FileField as a URI (how a response would show it).
@extend_schema_field({"type": "string", "format": "binary", "minLength": 1})  # an empty file is a 400
class BinaryFileField(serializers.FileField):
    pass


class UploadRequestSerializer(serializers.Serializer[Any]):
    file = BinaryFileField(
        allow_empty_file=False,
        help_text="The file (multipart/form-data). Size: JOBS['MAX_UPLOAD_BYTES']; kinds: JOBS['UPLOAD_EXTENSIONS'] "
        "and JOBS['UPLOAD_CONTENT_TYPES'].",
    )


class UploadSerializer(serializers.ModelSerializer[Upload]):
    class Meta:
        model = Upload
        fields = ["id", "name", "size", "content_type", "created_at"]
        read_only_fields = fields


class SizeLimit(FileUploadHandler):
    """Refuses a request's files once they pass ``JOBS["MAX_UPLOAD_BYTES"]`` together, while they arrive: an
    oversized file is not first copied whole to a temporary file. It passes every chunk on to Django's handlers."""

    def __init__(self, request: HttpRequest, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > self.limit:
            raise UploadTooLarge(f"The file is larger than {self.limit} bytes (JOBS['MAX_UPLOAD_BYTES']).")
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler builds the file


def problem(description: str) -> OpenApiResponse:
    return OpenApiResponse(description=description)


class UploadListView(JobsAPIView):
    """Upload a file for your jobs; a payload names it by id (``{"upload": "<id>"}`` for the types that take one)."""

    schema = AutoSchema()
    parser_classes = [MultiPartParser]

    def get_exception_handler(self) -> ExceptionHandler:
        return handle_upload_error

    def initialize_request(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Request:
        # Before anything reads the body (authentication's CSRF check may): the limit applies from the first byte.
        request.upload_handlers.insert(0, SizeLimit(request, jobs_settings().MAX_UPLOAD_BYTES))
        return super().initialize_request(request, *args, **kwargs)

    @openapi(
        request={"multipart/form-data": UploadRequestSerializer},
        responses={
            201: UploadSerializer,
            400: problem("No file in the field 'file', several, or an empty one."),
            401: problem("Not signed in."),
            413: problem("The file is larger than JOBS['MAX_UPLOAD_BYTES']."),
            415: problem("Not multipart/form-data, or a file name or declared type that is not allowed."),
        },
    )
    def post(self, request: Request) -> Response:
        body = UploadRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if len(request.FILES.getlist("file")) != 1:
            raise serializers.ValidationError({"file": ["Send exactly one file."]})
        upload = uploads.store(body.validated_data["file"], owner=request.user)
        return Response(UploadSerializer(upload).data, status=status.HTTP_201_CREATED)


class UploadDetailView(JobsAPIView):
    """One upload's details: yours, or anybody's with jobs.view_joblog."""

    schema = AutoSchema()

    def get_exception_handler(self) -> ExceptionHandler:
        return handle_upload_error

    @openapi(
        parameters=[OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
        responses={
            200: UploadSerializer,
            401: problem("Not signed in."),
            404: problem("No such upload, or not yours."),
        },
    )
    def get(self, request: Request, id: str) -> Response:
        upload = uploads.get_for(request.user, id, see_all=may_see_all_jobs(request.user))
        return Response(UploadSerializer(upload).data)
