"""Keep secrets out of messages: presigned URLs lose their query string."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """Return ``url`` without its query string and fragment (where presigned signatures live).

    ``https://bucket/key?X-Amz-Signature=abc`` becomes ``https://bucket/key?<redacted>``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    suffix = "?<redacted>" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) + suffix
