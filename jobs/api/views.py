"""The REST API: thin adapters from HTTP to jobs.services and jobs.monitoring. The one place errors become HTTP."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

from django.apps import apps
from django.db.models import QuerySet
from django.http import Http404
from django.templatetags.static import static
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer, extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import status, viewsets
from rest_framework.authentication import BaseAuthentication, SessionAuthentication, TokenAuthentication
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound, PermissionDenied, ValidationError
from rest_framework.permissions import AllowAny, BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.views import APIView, exception_handler

from .. import registry, scheduler, services
from ..access import may_see_all_jobs, may_steer_job
from ..exceptions import (
    IdempotencyConflict,
    InvalidPayload,
    InvalidSchedule,
    InvalidSubmission,
    JobAlreadyFinished,
    JobNotFound,
    JobNotRetryable,
    JobsError,
    JobTypeForbidden,
    PayloadTooLarge,
    QueueNotFound,
    SubmitRateExceeded,
    UnknownJobType,
)
from ..models import JobEvent, JobLog, JobSchedule
from ..monitoring import get_health, list_queue_stats
from .pagination import ByName, NewestFirst, OldestFirst
from .parsers import StrictJSONParser
from .permissions import SchedulePermissions, SeesAllJobs, SteersAllJobs
from .serializers import (
    CronScheduleSerializer,
    ErrorSerializer,
    HealthSerializer,
    IntervalScheduleSerializer,
    JobCreateSerializer,
    JobEventSerializer,
    JobListFilterSerializer,
    JobSerializer,
    JobTypeSerializer,
    OnceScheduleSerializer,
    QueueActionSerializer,
    QueueStatsSerializer,
    ScheduleSerializer,
)

# Looked up along the exception's MRO, so a subclass (PayloadTooLarge) wins over its base (InvalidSubmission).
HTTP_STATUS: dict[type[JobsError], int] = {
    UnknownJobType: status.HTTP_400_BAD_REQUEST,
    InvalidSubmission: status.HTTP_400_BAD_REQUEST,
    InvalidSchedule: status.HTTP_400_BAD_REQUEST,
    PayloadTooLarge: status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    JobTypeForbidden: status.HTTP_403_FORBIDDEN,
    IdempotencyConflict: status.HTTP_409_CONFLICT,
    JobNotFound: status.HTTP_404_NOT_FOUND,
    QueueNotFound: status.HTTP_404_NOT_FOUND,
    JobAlreadyFinished: status.HTTP_409_CONFLICT,
    JobNotRetryable: status.HTTP_409_CONFLICT,
    SubmitRateExceeded: status.HTTP_429_TOO_MANY_REQUESTS,
}

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]([ -~]*[!-~])?$"
ExceptionHandler = Callable[[Exception, dict[str, Any]], Response | None]
ViewMethod = TypeVar("ViewMethod", bound=Callable[..., Any])


def handle_error(exc: Exception, context: dict[str, Any]) -> Response | None:
    """JobsError → its status with ``{"detail", "code"}``; everything else → DRF's handler, plus a ``code``."""
    if isinstance(exc, InvalidPayload):
        # Field errors of the job type's serializer, nested under the field that carried them.
        return Response({"payload": exc.errors}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, JobsError):
        # A JobsError always refuses what was asked; a type missing from the table is still not a crash.
        code = next((HTTP_STATUS[t] for t in type(exc).__mro__ if t in HTTP_STATUS), status.HTTP_400_BAD_REQUEST)
        answer = Response({"detail": str(exc), "code": exc.code}, status=code)
        if isinstance(exc, SubmitRateExceeded):
            answer["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return answer
    if isinstance(exc, Http404):
        exc = NotFound(*exc.args)  # what DRF's handler does too; converted here so that the code is known
    response = exception_handler(exc, context)
    if response is not None and isinstance(exc, APIException) and not isinstance(exc, ValidationError):
        if isinstance(response.data, dict) and set(response.data) == {"detail"}:
            response.data["code"] = exc.get_codes()
    return response


class JobsErrorsMixin:
    """First base of every jobs API view: our error mapping without touching the project's REST_FRAMEWORK."""

    def get_exception_handler(self) -> ExceptionHandler:
        return handle_error


class JobsAPIView(JobsErrorsMixin, APIView):
    """What every jobs endpoint shares, set here rather than taken from the project's REST_FRAMEWORK defaults."""

    parser_classes = [StrictJSONParser]
    permission_classes = [IsAuthenticated]

    def get_authenticators(self) -> list[BaseAuthentication]:
        # Token first, so an anonymous caller gets 401 with WWW-Authenticate; a site without
        # rest_framework.authtoken (no Token table) still gets session auth, with CSRF checks on writes.
        classes: list[type[BaseAuthentication]] = [SessionAuthentication]
        if apps.is_installed("rest_framework.authtoken"):
            classes.insert(0, TokenAuthentication)
        return [cls() for cls in classes]


def openapi(**kwargs: Any) -> Callable[[ViewMethod], ViewMethod]:
    """drf-spectacular's extend_schema, built on its AutoSchema whatever the project's DEFAULT_SCHEMA_CLASS.

    extend_schema subclasses the schema class it finds on the decorated function, else DEFAULT_SCHEMA_CLASS;
    DRF's default there would break generation, and projects should not have to change it for this app.
    """

    def decorate(view_method: ViewMethod) -> ViewMethod:
        setattr(view_method, "schema", JobsAutoSchema)  # noqa: B010
        return extend_schema(**kwargs)(view_method)

    return decorate


def problem(description: str) -> OpenApiResponse:
    """An error answer: ``{"detail", "code"}``."""
    return OpenApiResponse(ErrorSerializer, description=description)


def field_errors(description: str) -> OpenApiResponse:
    """A 400: field errors (``{"<field>": ["message", ...]}``), or ``{"detail", "code"}`` for a body that is not
    JSON."""
    return OpenApiResponse(OpenApiTypes.OBJECT, description=description)


class JobsAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, plus the error answers every operation can give, so that the document lists
    every status the server answers (an operation's own declarations win)."""

    def _get_response_bodies(self, direction: Any = "response") -> Any:
        responses = super()._get_response_bodies(direction)
        for code, answer in self.error_responses().items():
            if str(code) not in responses:
                responses[str(code)] = self._get_response_for_code(answer, str(code), direction=direction)  # type: ignore[no-untyped-call]
        return responses

    def error_responses(self) -> dict[int, OpenApiResponse]:
        view = self.view
        permissions = view.get_permissions()
        public = any(isinstance(p, AllowAny) for p in permissions)
        errors: dict[int, OpenApiResponse] = {}
        reads_body = self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None
        paginated = self._is_list_view() and getattr(view, "pagination_class", None) is not None
        if reads_body or paginated:
            errors[400] = field_errors(
                "Invalid input: see the field errors." if reads_body else "Invalid cursor or page_size."
            )
        if not public:
            errors[401] = problem("Not signed in: no valid token or session.")
            # Beyond IsAuthenticated, a model permission; a session's unsafe request also needs its CSRF token.
            if self.method not in ("GET", "HEAD") or any(type(p) is not IsAuthenticated for p in permissions):
                errors[403] = problem("No permission for this (or, with a session, no CSRF token).")
        if "{" in self.path:
            errors[404] = problem("No such object.")
        if reads_body:
            errors[413] = problem("The request body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE.")
            errors[415] = problem("The body is not application/json.")
        return errors


class JobViewSet(JobsAPIView, viewsets.GenericViewSet[JobLog]):
    """Submit jobs and follow or steer your own (with jobs.view_joblog / change_joblog: everyone's)."""

    schema = JobsAutoSchema()
    serializer_class = JobSerializer
    pagination_class = NewestFirst
    # Any segment reaches get_job(), so a malformed id is the same JSON 404 as an absent one.
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> QuerySet[JobLog]:
        # A column the job JSON never shows to this user stays in the database.
        jobs = JobLog.objects.visible_to(self.request.user)
        return jobs if may_see_all_jobs(self.request.user) else jobs.defer("traceback")

    def get_object(self) -> JobLog:
        return services.get_job(self.kwargs["pk"], user=self.request.user)

    def get_steerable_object(self) -> JobLog:
        """The job to cancel or retry: 404 if the caller cannot see it, 403 if they may see but not steer it."""
        job = self.get_object()
        if not may_steer_job(self.request.user, job.owner_id):
            raise PermissionDenied("You need the jobs.change_joblog permission to steer other users' jobs.")
        return job

    @openapi(
        parameters=[JobListFilterSerializer],
        responses={200: JobSerializer(many=True), 400: field_errors("A filter, the cursor or page_size is not valid.")},
    )
    def list(self, request: Request) -> Response:
        filters = JobListFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        jobs = self.get_queryset()
        if statuses := filters.validated_data.get("status"):
            jobs = jobs.filter(status__in=statuses)
        if type_names := filters.validated_data.get("type"):
            jobs = jobs.filter(job_type__in=type_names)
        if (after := filters.validated_data.get("created_after")) is not None:
            jobs = jobs.filter(created_at__gte=after)
        if (before := filters.validated_data.get("created_before")) is not None:
            jobs = jobs.filter(created_at__lt=before)
        page = self.paginate_queryset(jobs)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @openapi(
        request=JobCreateSerializer,
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                # Printable ASCII; HTTP drops spaces around a header's value, so the key neither starts nor ends
                # with one.
                {"type": "string", "minLength": 1, "maxLength": 255, "pattern": IDEMPOTENCY_KEY_PATTERN},
                OpenApiParameter.HEADER,
                description="1 to 255 printable ASCII characters. Replaying a key (per user and type) answers 200 "
                "with the job it created.",
            )
        ],
        responses={
            202: JobSerializer,
            200: OpenApiResponse(JobSerializer, description="Idempotent replay: the job this key created."),
            400: field_errors("Unknown type, invalid payload (field errors under payload) or options."),
            403: problem("Staff-only job type."),
            409: problem("This Idempotency-Key was used with a different payload."),
            413: problem("The payload is larger than JOBS['MAX_PAYLOAD_BYTES']."),
            429: problem("Too many submissions (JOBS['SUBMIT_RATE'] per user); see Retry-After."),
        },
    )
    def create(self, request: Request) -> Response:
        body = JobCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        options = body.validated_data
        job, created = services.get_or_submit(
            options["type"],
            options.get("payload"),
            user=request.user,
            priority=options["priority"],
            delay=options.get("delay"),
            run_at=options.get("run_at"),
            idempotency_key=idempotency_key(request),
        )
        return Response(self.get_serializer(job).data, status=status.HTTP_202_ACCEPTED if created else 200)

    @openapi(responses={200: JobSerializer, 404: problem("No such job, or not yours.")})
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @openapi(
        parameters=[
            OpenApiParameter(p["name"], p["schema"], OpenApiParameter.QUERY, description=p["description"])
            for p in OldestFirst().get_schema_operation_parameters(None)
        ],
        responses={200: JobEventSerializer(many=True), 404: problem("No such job, or not yours.")},
    )
    @action(detail=True, methods=["get"])
    def events(self, request: Request, pk: str) -> Response:
        paginator = OldestFirst()
        page = paginator.paginate_queryset(JobEvent.objects.filter(job=self.get_object()), request, view=self)
        return paginator.get_paginated_response(JobEventSerializer(page, many=True, context={"request": request}).data)

    @openapi(
        request=None,
        responses={
            202: JobSerializer,
            403: problem("Someone else's job, and no jobs.change_joblog permission."),
            404: problem("No such job, or not yours."),
            409: problem("Already finished."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        job = services.cancel_job(self.get_steerable_object(), user=request.user)
        return Response(self.get_serializer(job).data, status=status.HTTP_202_ACCEPTED)

    @openapi(
        request=None,
        responses={
            202: JobSerializer,
            403: problem("Someone else's job, and no jobs.change_joblog permission."),
            404: problem("No such job, or not yours."),
            409: problem("Only failed or canceled jobs can be retried."),
        },
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str) -> Response:
        job = services.retry_job(self.get_steerable_object(), user=request.user)
        return Response(self.get_serializer(job).data, status=status.HTTP_202_ACCEPTED)


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    # Printable ASCII only: the key is stored and compared as text on every database.
    if not (0 < len(key) <= 255 and key.isascii() and key.isprintable()):
        raise ValidationError({IDEMPOTENCY_HEADER: ["Use 1 to 255 printable ASCII characters."]})
    return key


class JobTypeListView(JobsAPIView):
    """Every registered job type with its queue, limits and payload JSON Schema."""

    schema = JobsAutoSchema()

    @openapi(responses=JobTypeSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(JobTypeSerializer(registry.all_types(), many=True).data)


class QueueViewSet(JobsAPIView, viewsets.ViewSet):
    """Operator controls per job queue (every priority level of it): stats with jobs.view_joblog, the rest with
    jobs.change_joblog."""

    schema = JobsAutoSchema()
    lookup_field = "name"
    lookup_value_regex = "[^/]+"

    def get_permissions(self) -> list[BasePermission]:
        return [SeesAllJobs() if self.action in ("list", "metadata") else SteersAllJobs()]

    @openapi(responses=QueueStatsSerializer(many=True))
    def list(self, request: Request) -> Response:
        return Response(list_queue_stats())

    @openapi(request=None, responses={200: QueueActionSerializer, 404: problem("No such queue.")})
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, name: str) -> Response:
        services.pause_queue(name)
        return Response({"name": name, "paused": True})

    @openapi(request=None, responses={200: QueueActionSerializer, 404: problem("No such queue.")})
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, name: str) -> Response:
        services.resume_queue(name)
        return Response({"name": name, "paused": False})

    @openapi(request=None, responses={200: QueueActionSerializer, 404: problem("No such queue.")})
    @action(detail=True, methods=["post"], url_path="requeue-failed")
    def requeue_failed(self, request: Request, name: str) -> Response:
        return Response({"name": name, "requeued": services.requeue_failed(name, user=request.user)})


# A schedule's body names the fields its kind needs: oneOf, one shape per kind (kind left out means cron).
SCHEDULE_BODY = PolymorphicProxySerializer(
    component_name="ScheduleBody",
    serializers=[CronScheduleSerializer, IntervalScheduleSerializer, OnceScheduleSerializer],
    resource_type_field_name=None,
)


class ScheduleViewSet(JobsAPIView, viewsets.ModelViewSet[JobSchedule]):
    """Cron, interval and one-off submissions (jobs.*_jobschedule permissions)."""

    schema = JobsAutoSchema()
    permission_classes = [SchedulePermissions]
    serializer_class = ScheduleSerializer
    pagination_class = ByName
    queryset = JobSchedule.objects.all()
    # Any segment reaches get_object(), so a malformed id is the same JSON 404 as an absent one.
    lookup_value_regex = "[^/]+"

    @openapi(request=SCHEDULE_BODY, responses={201: ScheduleSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().create(request, *args, **kwargs)

    @openapi(request=SCHEDULE_BODY, responses={200: ScheduleSerializer})
    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().update(request, *args, **kwargs)

    def perform_create(self, serializer: BaseSerializer[JobSchedule]) -> None:
        # Runs are submitted as the schedule's owner: whoever last created or edited it (DESIGN.md "Permissions"),
        # so nobody makes another user's schedule run something new in that user's name.
        serializer.save(owner=self.request.user)

    def perform_update(self, serializer: BaseSerializer[JobSchedule]) -> None:
        serializer.save(owner=self.request.user)

    @openapi(
        request=None,
        responses={
            202: JobSerializer,
            400: field_errors("The schedule's job type is no longer registered, or its payload no longer valid."),
            403: problem("The schedule's owner may not submit this type, or no jobs.change_jobschedule."),
            429: problem("Too many submissions by the schedule's owner (JOBS['SUBMIT_RATE']); see Retry-After."),
        },
    )
    @action(detail=True, methods=["post"])
    def run(self, request: Request, pk: str) -> Response:
        schedule = self.get_object()
        # As its owner (who last created or edited it), like its regular ticks; one without (made in code) runs as
        # the caller.
        job = scheduler.run_schedule_now(schedule, user=schedule.owner or request.user)
        return Response(JobSerializer(job, context=self.get_serializer_context()).data, status=202)


class HealthView(JobsAPIView):
    """200 when the database, Redis and at least one worker are up, else 503; details with jobs.view_joblog."""

    schema = JobsAutoSchema()
    permission_classes = [AllowAny]

    @openapi(responses={200: HealthSerializer, 503: HealthSerializer})
    def get(self, request: Request) -> Response:
        health = get_health()
        body: dict[str, Any] = dict(health) if may_see_all_jobs(request.user) else {"status": health["status"]}
        code = status.HTTP_200_OK if health["status"] == "ok" else status.HTTP_503_SERVICE_UNAVAILABLE
        return Response(body, status=code)


class SchemaView(JobsErrorsMixin, SpectacularAPIView):
    """The OpenAPI 3 document of this API alone (urls.py passes its routes as ``urlconf``)."""

    permission_classes = [AllowAny]
    authentication_classes: list[type[BaseAuthentication]] = []
    custom_settings = {
        "TITLE": "Jobs API",
        "DESCRIPTION": "Submit background jobs, follow their progress, and operate queues and schedules.",
        "VERSION": "1",
        # Several fields are called "status"; name their enums instead of letting hashes do it. (drf-spectacular
        # applies custom_settings to its global settings while it generates, so keep these free of per-request data.)
        "ENUM_NAME_OVERRIDES": {"JobStatusEnum": "jobs.models.JobStatus", "HealthStatusEnum": ["ok", "degraded"]},
    }

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        if isinstance(response.data, dict) and "paths" in response.data:
            # Paths are relative to where the API is mounted: the server URL carries that prefix.
            mount = request.path.removesuffix("schema/")
            response.data["servers"] = [{"url": mount.rstrip("/") or "/"}]
        return super().finalize_response(request, response, *args, **kwargs)


class DocsView(JobsErrorsMixin, SpectacularSwaggerView):
    """Swagger UI for the schema, from drf-spectacular-sidecar's static files: no CDN."""

    url_name = "jobs-api:schema"
    title = "Jobs API"
    permission_classes = [AllowAny]
    authentication_classes: list[type[BaseAuthentication]] = []

    # drf-spectacular's hooks for the asset URLs: the sidecar's copies, without a project SPECTACULAR_SETTINGS.
    # tests/integration/test_api_operations.py checks that every asset the page names is a local static file.
    @staticmethod
    def _swagger_ui_resource(filename: str) -> str:
        return static(f"drf_spectacular_sidecar/swagger-ui-dist/{filename}")

    @staticmethod
    def _swagger_ui_favicon() -> str:
        return static("drf_spectacular_sidecar/swagger-ui-dist/favicon-32x32.png")
