"""One hierarchy of errors the jobs app raises; jobs/api maps them to HTTP once."""

from __future__ import annotations

from typing import Any


class JobsError(Exception):
    """The jobs app could not do what was asked."""

    code = "jobs_error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class UnknownJobType(JobsError):
    """There is no job type with that name."""

    code = "unknown_job_type"


class InvalidSubmission(JobsError):
    """The submission is not valid."""

    code = "invalid"


class InvalidPayload(InvalidSubmission):
    """The payload does not match the job type's payload serializer."""

    code = "invalid_payload"

    def __init__(self, errors: dict[str, Any], message: str | None = None) -> None:
        self.errors = errors
        super().__init__(message)


class PayloadTooLarge(InvalidSubmission):
    """The payload is larger than JOBS["MAX_PAYLOAD_BYTES"] allows."""

    code = "payload_too_large"


class JobTypeForbidden(JobsError):
    """Only staff may submit this job type."""

    code = "forbidden"


class IdempotencyConflict(JobsError):
    """This idempotency key was already used for a job with a different payload."""

    code = "idempotency_conflict"


class SubmitRateExceeded(JobsError):
    """Too many submissions: wait a moment, then try again."""

    code = "throttled"

    def __init__(self, retry_after: float, message: str | None = None) -> None:
        self.retry_after = retry_after  # seconds until the budget has room again
        super().__init__(message)


class JobNotFound(JobsError):
    """No such job."""

    code = "not_found"


class JobAlreadyFinished(JobsError):
    """The job has already finished."""

    code = "already_finished"


class JobNotRetryable(JobsError):
    """Only failed or canceled jobs can be retried."""

    code = "not_retryable"


class QueueNotFound(JobsError):
    """No such queue."""

    code = "not_found"


class InvalidSchedule(JobsError):
    """The schedule's timing is not valid."""

    code = "invalid_schedule"


class UploadRefused(JobsError):
    """This file cannot be uploaded."""

    code = "invalid_upload"


class UploadTooLarge(UploadRefused):
    """The file is larger than JOBS["MAX_UPLOAD_BYTES"] allows."""

    code = "upload_too_large"


class UploadTypeRefused(UploadRefused):
    """Files of this kind cannot be uploaded here."""

    code = "unsupported_file_type"


class UploadNotFound(JobsError):
    """No such upload."""

    code = "not_found"


class PermanentError(Exception):
    """Raised by a handler to fail its job at once, without further attempts (runner control flow)."""


class JobCanceled(BaseException):
    """Raised inside a handler that did not stop by itself after a cancel request.

    A BaseException so that a handler's ``except Exception`` cannot swallow the cancellation.
    """


class WorkerShutdown(BaseException):
    """Raised inside a handler still running when its worker's shutdown grace period ends.

    The job goes back to its queue; the interrupted attempt does not count.
    """


class JobTimeout(BaseException):
    """Raised inside a handler still running when its type's timeout has passed.

    A BaseException, like JobCanceled: a handler's ``except Exception`` cannot swallow it.
    """


class WorkerLost(Exception):
    """The process running this attempt ended before it could report an outcome."""
