"""Object storage for services that read their input from a bucket (Refinery): Airflow connections → ObjectStore.

The connection's extras name the place: ``manifest_location`` (``s3://bucket/prefix``) and
``storage_conn_id`` (an Airflow ``aws`` connection, ``aws_default`` when missing). A ``gs://``
location needs the Google provider and a ``google_cloud_platform`` connection holding a service
account key (``google_cloud_default`` when missing). S3 access goes
through the Amazon provider's :class:`~airflow.providers.amazon.aws.hooks.s3.S3Hook`, so the
connection's ``endpoint_url`` extra (MinIO, a test server) and its credential chain apply.
Storage errors become the package's typed errors; no message carries a credential.
"""

from __future__ import annotations

import abc
import contextlib
import importlib.util
import io
import json
from collections.abc import Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from airflow_batchcode.exceptions import (
    AuthenticationError,
    ConfigurationError,
    IncompleteDownloadError,
    NotFoundError,
    TransportError,
)
from airflow_batchcode.services.base import ManifestSource, ObjectStore, StagedInput

DEFAULT_STORAGE_CONN_ID = "aws_default"
DEFAULT_GCP_CONN_ID = "google_cloud_default"
DEFAULT_REGION = "us-east-1"
READ_BUFFER = 1 << 20
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NoSuchBucket", "NotFound"})
_DENIED = frozenset(
    {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key); a clear error for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigurationError(f"Expected an s3://bucket/key URL, got {url[:200]!r}")
    return parts.netloc, parts.path.lstrip("/")


def storage_error(exc: Exception, action: str, url: str) -> Exception:
    """The package's error for a boto3 / botocore exception, free of credentials."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = str(error.get("Message", "") or code)[:300]
        if code in _NOT_FOUND or status == 404:
            return NotFoundError(
                f"{action} {url}: no such object or bucket", status_code=status, service_message=message
            )
        if code in _DENIED or status == 403:
            return AuthenticationError(
                f"{action} {url}: access denied; check the storage connection's credentials and permissions",
                status_code=status,
                service_message=message,
            )
        return TransportError(f"{action} {url} failed: {code or 'error'} ({message})")
    if isinstance(exc, NoCredentialsError):
        return ConfigurationError(f"{action} {url}: the storage connection has no AWS credentials")
    if isinstance(exc, BotoCoreError):
        return TransportError(f"{action} {url} failed ({type(exc).__name__})")
    return exc


class _S3Reader(io.RawIOBase):
    """A streamed ``get_object`` body whose failures are the package's errors.

    botocore checks the body against its ``Content-Length``: a short body is an
    :class:`IncompleteDownloadError`.
    """

    def __init__(self, body: Any, url: str) -> None:
        super().__init__()
        self._body = body
        self._url = url

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        from botocore.exceptions import BotoCoreError, IncompleteReadError, ResponseStreamingError

        try:
            data = self._body.read(len(buffer))
        except (IncompleteReadError, ResponseStreamingError) as exc:
            raise IncompleteDownloadError(f"reading {self._url} broke off ({type(exc).__name__})") from None
        except (BotoCoreError, OSError) as exc:
            raise IncompleteDownloadError(f"reading {self._url} failed ({type(exc).__name__})") from None
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class _BucketStore(abc.ABC):
    """What the S3 and GCS stores share: files are staged as ``scheme://bucket/prefix/name``.

    A subclass sets ``scheme`` and the connection it uses by default, reads the connection's
    ``credentials()`` and writes one object with ``_upload`` (a stream) or ``_put`` (bytes),
    turning its client's failures into the package's errors.

    :param bucket: the bucket manifests are staged in.
    :param prefix: key prefix of staged manifests (leading and trailing ``/`` are dropped).
    :param conn_id: the Airflow connection the store reads and writes with; the class's
        ``default_conn_id`` when empty.
    """

    scheme: str
    default_conn_id: str

    def __init__(self, bucket: str, prefix: str = "", conn_id: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.conn_id = conn_id or self.default_conn_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.scheme}://{self.bucket}/{self.prefix}, conn_id={self.conn_id!r})"

    def key_for(self, name: str) -> str:
        """The object key a staged file called ``name`` gets."""
        if not name or "/" in name or name in (".", ".."):
            raise ConfigurationError(f"Invalid staged object name {name!r}")
        return f"{self.prefix}/{name}" if self.prefix else name

    @abc.abstractmethod
    def credentials(self) -> dict[str, str]:
        """What a service needs to read the bucket (each service's store documents its shape)."""

    @abc.abstractmethod
    def _upload(self, handle: IO[bytes], key: str, url: str) -> None:
        """Write the object ``key`` from a stream; ``url`` is only for error messages."""

    @abc.abstractmethod
    def _put(self, key: str, data: bytes, content_type: str, url: str) -> None:
        """Write the small object ``key``; ``url`` is only for error messages."""

    def stage(self, source: ManifestSource, name: str) -> StagedInput:
        """Upload ``source`` (streamed) as ``prefix/name``, with the credentials the service reads it with."""
        key = self.key_for(name)
        url = f"{self.scheme}://{self.bucket}/{key}"
        credentials = self.credentials()
        with contextlib.ExitStack() as stack:
            handle: IO[bytes] = stack.enter_context(source.open("rb")) if isinstance(source, Path) else source
            self._upload(handle, key, url)
        return StagedInput(url=url, credentials=credentials)

    def put(self, name: str, data: bytes, content_type: str = "application/json") -> str:
        """Store a small object ``prefix/name``; return its URL."""
        key = self.key_for(name)
        url = f"{self.scheme}://{self.bucket}/{key}"
        self._put(key, data, content_type, url)
        return url


class S3ObjectStore(_BucketStore):
    """Stages manifests under ``s3://bucket/prefix/`` and reads objects, through an Airflow ``aws``
    connection (``aws_default`` unless ``conn_id`` names another)."""

    scheme = "s3"
    default_conn_id = DEFAULT_STORAGE_CONN_ID

    @cached_property
    def hook(self) -> Any:
        """The Amazon provider's S3 hook for the connection."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.conn_id)

    @cached_property
    def _client(self) -> Any:
        return self.hook.get_conn()

    def credentials(self) -> dict[str, str]:
        """What a service needs to read the bucket: the connection's key pair, region and session token."""
        try:
            creds = self.hook.get_credentials()
        except Exception as exc:
            raise storage_error(exc, "reading credentials of storage connection", self.conn_id) from None
        if not creds.access_key or not creds.secret_key:
            raise ConfigurationError(f"Storage connection {self.conn_id!r} has no access key and secret key")
        values = {
            "access_key_id": creds.access_key,
            "secret_access_key": creds.secret_key,
            "region": self.hook.conn_region_name or DEFAULT_REGION,
        }
        if creds.token:
            values["session_token"] = creds.token
        return values

    def _upload(self, handle: IO[bytes], key: str, url: str) -> None:
        # boto3's transfer manager goes multipart when the manifest is large.
        try:
            self._client.upload_fileobj(handle, self.bucket, key, ExtraArgs={"ContentType": "application/x-ndjson"})
        except Exception as exc:
            raise _unwrapped(exc, "staging the manifest at", url) from None

    def _put(self, key: str, data: bytes, content_type: str, url: str) -> None:
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        except Exception as exc:
            raise _unwrapped(exc, "staging a record at", url) from None

    def presign(self, url: str, expires_in: int) -> str:
        """A presigned ``GET`` URL of an object (``s3://bucket/key``), valid ``expires_in`` seconds."""
        bucket, key = parse_s3_url(url)
        try:
            signed: str = self._client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_in
            )
        except Exception as exc:
            raise storage_error(exc, "presigning", url) from None
        return signed

    @contextlib.contextmanager
    def open(self, url: str) -> Iterator[IO[bytes]]:
        """Stream an object (``s3://bucket/key``); a missing one is a :class:`NotFoundError`."""
        bucket, key = parse_s3_url(url)
        try:
            response = self._client.get_object(Bucket=bucket, Key=key)
        except Exception as exc:
            raise storage_error(exc, "reading", url) from None
        with io.BufferedReader(_S3Reader(response["Body"], url), READ_BUFFER) as reader:
            yield reader


class GcsObjectStore(_BucketStore):
    """Stages manifests under ``gs://bucket/prefix/`` through an Airflow Google Cloud connection.

    The connection is of type ``google_cloud_platform`` (``google_cloud_default`` unless ``conn_id``
    names another). The service reads the manifests with its service account key (``keyfile_dict``
    in its extra), which is what Refinery's ``credentials.service_account_json`` takes.
    """

    scheme = "gs"
    default_conn_id = DEFAULT_GCP_CONN_ID

    @cached_property
    def hook(self) -> Any:
        """The Google provider's GCS hook for the connection."""
        from airflow.providers.google.cloud.hooks.gcs import GCSHook

        return GCSHook(gcp_conn_id=self.conn_id)

    def credentials(self) -> dict[str, str]:
        """The connection's service account key as JSON text (``service_account_json``)."""
        extra = self.hook.get_connection(self.conn_id).extra_dejson
        keyfile = extra.get("keyfile_dict") or extra.get("extra__google_cloud_platform__keyfile_dict")
        if not keyfile:
            raise ConfigurationError(
                f"Storage connection {self.conn_id!r} has no service account key (keyfile_dict): "
                "the service needs one to read gs:// manifests"
            )
        return {"service_account_json": keyfile if isinstance(keyfile, str) else json.dumps(keyfile)}

    def _upload(self, handle: IO[bytes], key: str, url: str) -> None:
        try:
            blob = self.hook.get_conn().bucket(self.bucket).blob(key)
            blob.upload_from_file(handle, content_type="application/x-ndjson")
        except Exception as exc:
            raise _gcs_error(exc, "staging the manifest at", url) from None

    def _put(self, key: str, data: bytes, content_type: str, url: str) -> None:
        try:
            self.hook.get_conn().bucket(self.bucket).blob(key).upload_from_string(data, content_type=content_type)
        except Exception as exc:
            raise _gcs_error(exc, "staging a record at", url) from None

    @contextlib.contextmanager
    def open(self, url: str) -> Iterator[IO[bytes]]:
        """Stream an object (``gs://bucket/name``)."""
        parts = urlsplit(url)
        if parts.scheme != "gs" or not parts.netloc:
            raise ConfigurationError(f"Expected a gs://bucket/name URL, got {url[:200]!r}")
        try:
            reader = self.hook.get_conn().bucket(parts.netloc).blob(parts.path.lstrip("/")).open("rb")
        except Exception as exc:
            raise _gcs_error(exc, "reading", url) from None
        with reader:
            yield reader


def _gcs_error(exc: Exception, action: str, url: str) -> Exception:
    """The package's error for a Google client exception (matched by name: the library is optional)."""
    name = type(exc).__name__
    if name == "NotFound":
        return NotFoundError(f"{action} {url}: no such object or bucket", status_code=404)
    if name in ("Forbidden", "Unauthorized"):
        return AuthenticationError(f"{action} {url}: access denied; check the storage connection", status_code=403)
    return TransportError(f"{action} {url} failed ({name})")


def _unwrapped(exc: Exception, action: str, url: str) -> Exception:
    """boto3's transfer manager wraps client errors in ``S3UploadFailedError``: use the one inside."""
    cause = exc.__cause__ or exc.__context__
    from botocore.exceptions import ClientError

    if isinstance(cause, ClientError):
        return storage_error(cause, action, url)
    if type(exc).__name__ == "S3UploadFailedError":
        return TransportError(f"{action} {url} failed: {str(exc)[:300]}")
    return storage_error(exc, action, url)


def object_store_for(extra: Mapping[str, Any]) -> ObjectStore | None:
    """The object store a connection's extras describe, or ``None`` without ``manifest_location``.

    :raises ConfigurationError: an unsupported or malformed location.
    """
    location = str(extra.get("manifest_location") or "").strip()
    if not location:
        return None
    parts = urlsplit(location)
    if parts.scheme == "gs" and importlib.util.find_spec("airflow.providers.google") is None:
        raise ConfigurationError(
            "manifest_location is a gs:// URL, which needs apache-airflow-providers-google; "
            "install it or use an s3:// location"
        )
    if parts.scheme not in ("s3", "gs") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigurationError(
            f"manifest_location must look like s3://bucket/prefix (or gs://bucket/prefix), got {location[:200]!r}"
        )
    store = GcsObjectStore if parts.scheme == "gs" else S3ObjectStore
    conn_id = extra.get("storage_conn_id")
    return store(parts.netloc, parts.path, str(conn_id) if conn_id else None)
