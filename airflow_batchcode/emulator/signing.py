"""Presigned storage URLs in the shape of S3's, signed with a per-process random secret.

Two query styles are produced and verified:

* ``v4`` (what the ABS service hands out): ``X-Amz-Algorithm``, ``X-Amz-Credential``,
  ``X-Amz-Date``, ``X-Amz-Expires``, ``X-Amz-SignedHeaders``, ``X-Amz-Signature`` (hex
  HMAC-SHA256 over the method, the path, the sorted query without the signature and the values of
  the signed headers other than ``host``);
* ``v2`` (older S3 form): ``AWSAccessKeyId``, ``Expires`` (unix epoch), ``Signature`` (base64
  HMAC-SHA1 over the method, the expiry, the ``x-amz-*`` headers and the path).

The host is deliberately not bound, so a URL keeps working behind a proxy (``public_url``).
Errors never contain the signature or the URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import string
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal
from urllib.parse import quote

REGION = "ap-southeast-2"
_V4_ALGORITHM = "AWS4-HMAC-SHA256"
_V4_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_MAX_EXPIRES = 7 * 24 * 3600

Style = Literal["v4", "v2"]


class SignatureError(Exception):
    """A presigned request was refused.

    :param code: the S3 error code (``SignatureDoesNotMatch``, ``AccessDenied``, ``InvalidArgument``).
    :param message: a human message, free of secrets.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        """The HTTP status S3 would answer with."""
        return 400 if self.code in ("InvalidArgument", "AuthorizationQueryParametersError") else 403


def _mismatch() -> SignatureError:
    return SignatureError(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    )


_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def _uri_encode(value: str) -> str:
    """RFC 3986 encoding as SigV4 wants it (fast for the usual, already safe, values)."""
    return value if _UNRESERVED.fullmatch(value) else _quote(value)


@lru_cache(maxsize=4096)
def _quote(value: str) -> str:
    return quote(value, safe="-_.~")


def _canonical_query(params: Mapping[str, str], *, without: str) -> str:
    pairs = sorted((_uri_encode(k), _uri_encode(v)) for k, v in params.items() if k != without)
    return "&".join(f"{k}={v}" for k, v in pairs)


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v.strip() for k, v in headers.items()}


class Signer:
    """Signs and verifies presigned URLs with one secret.

    :param secret: the HMAC key; a random one when omitted.
    :param access_key_id: the fake ``AKIA…`` id put into URLs; random when omitted.
    """

    def __init__(self, secret: bytes | None = None, access_key_id: str | None = None) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        alphabet = string.ascii_uppercase + string.digits
        self.access_key_id = access_key_id or "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))

    # -- signing ---------------------------------------------------------------------------------

    def presign(
        self,
        method: str,
        path: str,
        *,
        ttl: int,
        now: float,
        signed_headers: Mapping[str, str] | None = None,
        style: Style = "v4",
    ) -> str:
        """Return ``path?query`` granting ``method`` on ``path`` for ``ttl`` seconds from ``now``.

        ``signed_headers`` must then be sent with exactly these values.
        """
        headers = _lower_headers(signed_headers or {})
        if style == "v2":
            expires = str(int(now) + int(ttl))
            signature = self._v2_signature(method, path, expires, headers)
            query = {"AWSAccessKeyId": self.access_key_id, "Expires": expires, "Signature": signature}
            return f"{path}?{_canonical_query(query, without='')}"
        stamp = datetime.fromtimestamp(now, UTC)
        query = {
            "X-Amz-Algorithm": _V4_ALGORITHM,
            "X-Amz-Credential": f"{self.access_key_id}/{stamp:%Y%m%d}/{REGION}/s3/aws4_request",
            "X-Amz-Date": stamp.strftime(_V4_DATE_FORMAT),
            "X-Amz-Expires": str(int(ttl)),
            "X-Amz-SignedHeaders": ";".join(sorted({"host", *headers})),
        }
        canonical_query = _canonical_query(query, without="")
        signature = self._v4_signature(method, path, query, canonical_query, headers)
        return f"{path}?{canonical_query}&X-Amz-Signature={signature}"

    def _v4_signature(
        self, method: str, path: str, query: Mapping[str, str], canonical_query: str, headers: Mapping[str, str]
    ) -> str:
        names = [n for n in query.get("X-Amz-SignedHeaders", "").split(";") if n and n != "host"]
        canonical = "\n".join(
            [
                method.upper(),
                path,
                canonical_query,
                *(f"{n}:{headers.get(n, '')}" for n in names),
                query.get("X-Amz-SignedHeaders", ""),
                "UNSIGNED-PAYLOAD",
            ]
        )
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        to_sign = f"{_V4_ALGORITHM}\n{query.get('X-Amz-Date', '')}\n{query.get('X-Amz-Credential', '')}\n{digest}"
        return hmac.new(self._secret, to_sign.encode(), hashlib.sha256).hexdigest()

    def _v2_signature(self, method: str, path: str, expires: str, headers: Mapping[str, str]) -> str:
        amz = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()) if k.startswith("x-amz-"))
        to_sign = f"{method.upper()}\n\n\n{expires}\n{amz}{path}"
        return base64.b64encode(hmac.new(self._secret, to_sign.encode(), hashlib.sha1).digest()).decode()

    # -- verification ----------------------------------------------------------------------------

    def verify(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        now: float | None = None,
    ) -> None:
        """Check a presigned request; raise :class:`SignatureError` when it must be refused.

        The signature is checked before the expiry, so a URL whose expiry was edited is a
        ``SignatureDoesNotMatch``, and a genuine but old one is ``AccessDenied``.
        """
        now = time.time() if now is None else now
        lowered = _lower_headers(headers)
        if "X-Amz-Signature" in query:
            self._verify_v4(method, path, query, lowered, now)
        elif "Signature" in query:
            self._verify_v2(method, path, query, lowered, now)
        else:
            raise _mismatch()

    def _verify_v4(
        self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], now: float
    ) -> None:
        if query.get("X-Amz-Algorithm") != _V4_ALGORITHM:
            raise _mismatch()
        for name in query.get("X-Amz-SignedHeaders", "").split(";"):
            if name and name != "host" and name not in headers:
                raise SignatureError("InvalidArgument", f"Missing required header for this request: {name}")
        canonical_query = _canonical_query(query, without="X-Amz-Signature")
        expected = self._v4_signature(method, path, query, canonical_query, headers)
        if not _same(expected, query.get("X-Amz-Signature", "")):
            raise _mismatch()
        try:
            signed_at = datetime.strptime(query.get("X-Amz-Date", ""), _V4_DATE_FORMAT).replace(tzinfo=UTC)
            expires = int(query.get("X-Amz-Expires", ""))
        except ValueError:
            raise _mismatch() from None
        if not 0 < expires <= _MAX_EXPIRES:
            raise SignatureError("AuthorizationQueryParametersError", "X-Amz-Expires is out of range")
        if now > signed_at.timestamp() + expires:
            raise SignatureError("AccessDenied", "Request has expired")

    def _verify_v2(
        self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], now: float
    ) -> None:
        if query.get("AWSAccessKeyId") != self.access_key_id:
            raise _mismatch()
        expires = query.get("Expires", "")
        expected = self._v2_signature(method, path, expires, headers)
        if not _same(expected, query.get("Signature", "")):
            raise _mismatch()
        try:
            deadline = int(expires)
        except ValueError:
            raise _mismatch() from None
        if now > deadline:
            raise SignatureError("AccessDenied", "Request has expired")


_DEFAULT = Signer()

presign = _DEFAULT.presign
""":meth:`Signer.presign` with this process's signer."""

verify = _DEFAULT.verify
""":meth:`Signer.verify` with this process's signer."""


def _same(expected: str, given: str) -> bool:
    """Constant-time comparison that also copes with non-ASCII input (``compare_digest`` refuses str of it)."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogateescape"))
