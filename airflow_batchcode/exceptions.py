"""Every error airflow-batchcode raises, in one hierarchy.

::

    BatchCodeError
    ├── ConfigurationError            bad connection or operator settings
    ├── TransportError                the request never got a usable answer (network, timeout)
    │   └── IncompleteDownloadError   a body shorter or longer than its Content-Length
    ├── UnexpectedResponseError       the service answered something off-contract
    ├── ServiceError                  the service answered with an error status
    │   ├── InvalidRequestError       400
    │   ├── AuthenticationError       401 / 403 from the API or the token endpoint
    │   ├── NotFoundError             404 (also another tenant's operation)
    │   ├── ConflictError             409
    │   ├── RateLimitedError          429 "Too Many Requests"
    │   │   └── QuotaExceededError    429 "Limit Exceeded" (daily quota: do not retry today)
    │   ├── ServerError               5xx
    │   └── UploadRejectedError       the presigned upload was refused (expired, wrong key, too late)
    ├── OperationError                a remote operation ended badly
    │   ├── OperationFailedError      state ``failed``
    │   └── OperationTimedOutError    state ``timed_out``: the operation never got its input
    │       └── WaitTimedOutError     our own wait deadline passed; the operation may still finish
    └── QualityGateError              the run's success rate is under ``min_success_rate``

Messages never contain tokens, client secrets or presigned URLs: URLs are reported with
their query string removed (see :func:`airflow_batchcode.services.redact.redact_url`).
"""

from __future__ import annotations


class BatchCodeError(Exception):
    """Base class of every error raised by airflow-batchcode."""


class ConfigurationError(BatchCodeError):
    """A connection, operator argument or client setting is missing or invalid."""


class TransportError(BatchCodeError):
    """The request got no usable answer: connection refused or reset, timeout, broken body."""


class IncompleteDownloadError(TransportError):
    """A download ended before (or after) the length the server announced."""


class UnexpectedResponseError(BatchCodeError):
    """The service answered with something outside its documented contract."""


class ServiceError(BatchCodeError):
    """The service answered with an HTTP error status.

    :param message: what went wrong, in our words.
    :param status_code: the HTTP status.
    :param service_message: the service's own message, verbatim.
    :param operation_id: the remote operation concerned, when there is one.
    :param retry_after: seconds the service asked us to wait, when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        service_message: str | None = None,
        operation_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status_code = status_code
        self.service_message = service_message
        self.operation_id = operation_id
        self.retry_after = retry_after
        parts = [message]
        if status_code is not None:
            parts.append(f"HTTP {status_code}")
        if operation_id:
            parts.append(f"operation {operation_id}")
        if service_message:
            parts.append(f"service said: {service_message!r}")
        super().__init__("; ".join(parts))


class InvalidRequestError(ServiceError):
    """400: the service could not read the request."""


class AuthenticationError(ServiceError):
    """401/403: bad credentials, an expired or malformed token, or a denied resource."""


class NotFoundError(ServiceError):
    """404: no such topic, model, operation or file (or it belongs to another client)."""


class ConflictError(ServiceError):
    """409: the request conflicts with the resource (model of another topic, job not finished)."""


class RateLimitedError(ServiceError):
    """429: too many requests per second; retried after ``Retry-After``."""


class QuotaExceededError(RateLimitedError):
    """429 "Limit Exceeded": the daily quota is spent; retrying today will not help."""


class ServerError(ServiceError):
    """5xx: the service failed; retried with backoff."""


class UploadRejectedError(ServiceError):
    """The presigned upload was refused (expired URL, wrong KMS key, operation no longer awaiting input)."""


class OperationError(BatchCodeError):
    """A remote operation ended in a state that yields no results.

    :param operation_id: the remote operation.
    :param service_message: the service's own explanation, if it gave one.
    """

    advice = ""

    def __init__(self, operation_id: str, service_message: str | None = None, *, detail: str = "") -> None:
        self.operation_id = operation_id
        self.service_message = service_message
        text = f"{self.summary} (operation {operation_id})"
        if service_message:
            text += f": service said {service_message!r}"
        if detail:
            text += f". {detail}"
        if self.advice:
            text += f". {self.advice}"
        super().__init__(text)

    summary = "Operation ended without results"


class OperationFailedError(OperationError):
    """The service reports the operation ``failed``."""

    summary = "Batch coding operation failed"
    advice = (
        "Check the chunk's input file for malformed or inconsistent records, then clear the "
        "task group to create a new operation"
    )


class OperationTimedOutError(OperationError):
    """The operation ``timed_out`` waiting for input, or our own deadline passed."""

    summary = "Batch coding operation timed out"
    advice = "A timed-out operation cannot be reused: clear the task group to create a new operation"


class WaitTimedOutError(OperationTimedOutError):
    """The sensor's own timeout passed before the operation finished."""

    summary = "Gave up waiting for the batch coding operation"
    advice = "The operation may still finish: clear the wait task to wait again, or give the sensor a longer timeout"


class QualityGateError(BatchCodeError):
    """The run's success rate fell below the configured ``min_success_rate``."""
