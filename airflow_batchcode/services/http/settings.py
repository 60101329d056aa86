"""How a client talks HTTP: timeouts, retry policy, size cap, and which URLs it accepts."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import ip_address
from urllib.parse import urlsplit

from airflow_batchcode.exceptions import UnexpectedResponseError
from airflow_batchcode.services.budget.settings import QuotaSettings
from airflow_batchcode.services.http.retry import RetryPolicy
from airflow_batchcode.services.redact import redact_url


@dataclass(frozen=True)
class HttpSettings:
    """Network behaviour of one client.

    :param connect_timeout: seconds to open a connection.
    :param read_timeout: seconds to wait for each read of a response.
    :param retry: the retry policy for 429, 5xx and connection errors.
    :param max_response_bytes: largest JSON body accepted from an API call.
    :param allow_insecure_http: allow plain ``http`` URLs to hosts other than loopback.
    :param quota: the account's request quota per window and where its budget is kept.
    """

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_response_bytes: int = 4 << 20
    allow_insecure_http: bool = False
    quota: QuotaSettings = field(default_factory=QuotaSettings)

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)


def check_url(url: str, *, allow_insecure_http: bool, what: str) -> None:
    """Refuse URLs that would leak data: only ``https``, or ``http`` to loopback (or when allowed)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise UnexpectedResponseError(f"Refusing {what}: it is not a valid URL") from None
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and (allow_insecure_http or is_loopback(parts.hostname)):
        return
    raise UnexpectedResponseError(
        f"Refusing {what} {redact_url(url)}: only https URLs are accepted "
        "(plain http only to loopback, or with allow_insecure_http in the connection extra)"
    )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
