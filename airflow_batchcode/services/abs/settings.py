"""What an ABS client is configured with: the API origin, the OAuth2 client and where it gets tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.services.http.settings import HttpSettings, check_url
from airflow_batchcode.services.registry import ServiceConfig

SERVICE = "abs"
DAILY_QUOTA = 10_000
"""Requests a partner account may make per day (public users: 1,000); extra ``daily_quota`` overrides it."""
POLL_ADVICE = 600.0
"""The documentation asks clients to check an operation "up to once every ten minutes"."""


def default_auth_url(base_url: str) -> str:
    """The token URL for an API origin.

    ``https://partner-coder.api.abs.gov.au`` authenticates at
    ``https://partner-coder.auth.abs.gov.au/oauth2/token``; any other origin (an emulator, a
    proxy) is assumed to serve ``/oauth2/token`` itself.
    """
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if host.endswith(".api.abs.gov.au"):
        host = host.removesuffix(".api.abs.gov.au") + ".auth.abs.gov.au"
        return urlunsplit(("https", host, "/oauth2/token", "", ""))
    return base_url.rstrip("/") + "/oauth2/token"


@dataclass(frozen=True)
class AbsSettings:
    """What an ABS client needs to know.

    :param base_url: API origin, e.g. ``https://partner-coder.api.abs.gov.au`` (no ``/v1``).
    :param client_id: OAuth2 client id.
    :param client_secret: OAuth2 client secret (hidden from ``repr``).
    :param auth_url: full token URL; derived from ``base_url`` when ``None``.
    :param rate_limit: API requests per second for this connection (0: no rate limit).
    :param http: timeouts, retries and URL rules.
    """

    base_url: str
    client_id: str
    client_secret: str = field(repr=False)
    auth_url: str | None = None
    rate_limit: float = 1.0
    http: HttpSettings = field(default_factory=HttpSettings)

    def __post_init__(self) -> None:
        if not self.base_url or urlsplit(self.base_url).scheme not in ("http", "https"):
            raise ConfigurationError(f"ABS base URL must be an http(s) origin, got {self.base_url!r}")
        if not self.client_id or not self.client_secret:
            raise ConfigurationError("ABS needs a client id (login) and client secret (password)")
        check_url(self.api_root, allow_insecure_http=self.http.allow_insecure_http, what="API URL")

    @classmethod
    def from_config(cls, config: ServiceConfig) -> AbsSettings:
        """Settings from a connection: ``login`` and ``password`` are the OAuth2 client; extras
        ``auth_url`` and ``rate_limit``."""
        return cls(
            base_url=config.base_url,
            client_id=config.login,
            client_secret=config.password,
            auth_url=config.extra.get("auth_url") or None,
            rate_limit=config.number("rate_limit", 1.0),
            http=config.http_settings(),
        )

    @property
    def api_root(self) -> str:
        return self.base_url.rstrip("/")

    @property
    def token_url(self) -> str:
        return self.auth_url or default_auth_url(self.base_url)

    @property
    def limiter_key(self) -> str:
        return f"{SERVICE}:{self.api_root}:{self.client_id}"
