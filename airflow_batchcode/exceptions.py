"""Every error airflow-batchcode raises, in one hierarchy.

::

    BatchCodeError
    ├── ConfigurationError            bad connection or operator settings
    │   ├── MissingExtraError         an optional part's pip extra is not installed (also an ImportError)
    │   └── SourceQueryError          the database refused or failed the extract query
    ├── TransportError          [T]   the request never got a usable answer (network, timeout)
    │   └── IncompleteDownloadError   a body shorter or longer than its Content-Length
    ├── UnexpectedResponseError       the service answered something off-contract
    │   └── OutputOrderError          output lines that cannot be joined to their rows with certainty
    ├── ServiceError                  the service answered with an error status
    │   ├── InvalidRequestError       400
    │   ├── AuthenticationError       401 / 403 from the API or the token endpoint
    │   ├── NotFoundError             404 (also another tenant's operation)
    │   ├── ConflictError             409
    │   ├── RateLimitedError    [T]   429 "Too Many Requests"
    │   │   └── QuotaExceededError    429 "Limit Exceeded" (daily quota: do not retry today)
    │   ├── ServerError         [T]   500 / 502 / 503 / 504 (other 5xx are final)
    │   └── UploadRejectedError       the presigned upload was refused (expired, wrong key, too late)
    ├── OperationError                a remote operation ended badly
    │   ├── OperationFailedError      state ``failed``
    │   ├── OperationTimedOutError    state ``timed_out``: it never got its input and cannot be reused
    │   ├── WaitTimedOutError         our own wait deadline passed; the operation may still finish
    │   └── StatusCheckFailedError    the wait could not read the status; the operation may still finish
    ├── PartialLoadError              fewer rows reached the output table than were extracted
    ├── StagedFileMissingError        a staged file an earlier task wrote is not there (also a FileNotFoundError)
    ├── QualityGateError              the run's success rate is under ``min_success_rate``
    └── CreateOutcomeUnknownError     a paid create got no usable answer: check the service before retrying

``[T]`` marks the transient errors: another try of the same request may succeed. Transience is
decided here, once, by :attr:`BatchCodeError.transient`; the retry engine
(:mod:`airflow_batchcode.services.http.retry`) and the trigger read it and decide nothing else
about an error's kind. A :class:`TransportError` also means the answer may have been lost
(:attr:`BatchCodeError.answer_lost`): the service may have done what was asked, so a call that is
not safe to repeat (a create) is not tried again blindly. An error a retry loop has given up on
is marked (:attr:`BatchCodeError.retries_spent`, its message saying why) and is final for every
loop around that one.

Messages never contain tokens, client secrets or presigned URLs: URLs are reported with
their query string removed (see :func:`airflow_batchcode.services.redact.redact_url`).
"""

from __future__ import annotations

from typing import Any


class BatchCodeError(Exception):
    """Base class of every error raised by airflow-batchcode."""

    transient: bool = False
    """Whether the same request, tried again a little later, may succeed."""
    answer_lost: bool = False
    """Whether the service may have carried the request out although no answer reached us."""
    retries_spent: bool = False
    """Whether a retry loop has already given up on the request this error ended. No loop around it
    tries again: a token fetched inside an API call's try, retried six times and failed, would
    otherwise be fetched six times more for each of the call's own tries."""

    def stop_retrying(self, note: str | None = None) -> None:
        """Mark this error final for every retry loop (:attr:`retries_spent`), its message ending with ``note``."""
        self.retries_spent = True
        if note and len(self.args) == 1 and isinstance(self.args[0], str):
            self.args = (f"{self.args[0]}; {note}",)


class ConfigurationError(BatchCodeError):
    """A connection, operator argument or client setting is missing or invalid."""


class MissingExtraError(ConfigurationError, ImportError):
    """An optional part (the emulator, the demo) is used without the ``pip install`` extra it needs.

    :param message: what is missing and the ``pip install`` line that adds it.
    :param extra: the extra's name (``emulator``, ``demo``).
    """

    def __init__(self, message: str, *, extra: str) -> None:
        super().__init__(message)
        self.extra = extra


class SourceQueryError(ConfigurationError):
    """The source database refused or failed the extract query (a missing table or column, bad SQL).

    The message names the connection and carries the database's own words; the driver's exception
    is its ``__cause__``.
    """

    def __init__(self, conn_id: str, error: BaseException) -> None:
        self.conn_id = conn_id
        super().__init__(
            f"The extract query failed on connection {conn_id!r}: {error} ({type(error).__name__}). "
            "The query as it ran is on the extract task's Rendered Template tab (source_sql)"
        )


class TransportError(BatchCodeError):
    """The request got no usable answer: connection refused or reset, timeout, broken body."""

    transient = True
    answer_lost = True


class IncompleteDownloadError(TransportError):
    """A download ended before (or after) the length the server announced."""


class UnexpectedResponseError(BatchCodeError):
    """The service answered with something outside its documented contract."""


class OutputOrderError(UnexpectedResponseError):
    """Output lines do not answer the manifest lines in order and cannot be re-joined with certainty."""


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

    transient = True


class QuotaExceededError(RateLimitedError):
    """429 "Limit Exceeded": the daily quota is spent; retrying today will not help."""

    transient = False


TRANSIENT_SERVER_STATUS = frozenset({500, 502, 503, 504})
"""The 5xx statuses worth another try; the others (501 Not Implemented, 505, ...) will not change."""


GATEWAY_STATUS = frozenset({502, 504})
"""Statuses a proxy answers when it lost the service's own answer: the service may have done the work."""


class ServerError(ServiceError):
    """5xx: the service failed; 500, 502, 503 and 504 are retried with backoff.

    A 500 or 503 comes from the service, which did not carry the request out: a create is retried
    too. A 502 or 504 comes from a gateway in front of it that got no usable answer, so the
    service may have carried it out (:attr:`answer_lost`): a create is not tried again blindly.
    """

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.transient = self.status_code is None or self.status_code in TRANSIENT_SERVER_STATUS
        self.answer_lost = self.status_code in GATEWAY_STATUS


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
    """The service reports the operation ``timed_out``: it waited too long for its input."""

    summary = "Batch coding operation timed out"
    advice = "A timed-out operation cannot be reused: clear the task group to create a new operation"


class WaitTimedOutError(OperationError):
    """The sensor's own timeout passed before the operation finished.

    Not an :class:`OperationTimedOutError`: that one cannot be reused, this one may still finish.
    """

    summary = "Gave up waiting for the batch coding operation"
    advice = "The operation may still finish: clear the wait task to wait again, or give the sensor a longer timeout"


class StatusCheckFailedError(OperationError):
    """The wait ended because the operation's status could not be read, not because of its state."""

    summary = "Could not read the batch coding operation's status"
    advice = (
        "The operation may still finish: once the cause is fixed (the service answers again, or the "
        "connection's credentials are right), clear the wait task to wait on the same operation again; "
        "nothing is created or uploaded again"
    )


class PartialLoadError(BatchCodeError):
    """The load wrote a different number of rows than the run extracted; the load was refused."""


class StagedFileMissingError(BatchCodeError, FileNotFoundError):
    """A manifest, positions or result file that an earlier task of the run staged is not visible to this task.

    Almost always a deployment setting: a local staging folder under an executor that runs each
    task on any worker (Celery, Kubernetes). The message names the file and the setting to
    change. Also a :class:`FileNotFoundError`, so code that catches that keeps working.
    """


class QualityGateError(BatchCodeError):
    """The run's success rate fell below the configured ``min_success_rate``."""


class CreateOutcomeUnknownError(BatchCodeError):
    """A create call that starts paid work got no usable answer (lost answer, time-out, 5xx).

    The job may exist all the same, so it is not retried: the message names what was submitted
    (the manifest), for a person to check the service before running again.
    """
