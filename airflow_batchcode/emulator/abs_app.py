"""The ABS Occupation Coding Service's async batch API, emulated as a FastAPI app.

One app holds everything: OAuth2 tokens, per-client rate limit and daily quota, operations and
their lazily computed states, presigned storage (under ``/_storage``), a worker pool that codes
uploaded files, and the ``/_emulator`` admin routes (faults, stats, clock). The contract is the
service's own documentation (see the emulator's README for the decisions it leaves open).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

import msgspec
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from airflow_batchcode.emulator.coding_model import CodingModel, load_models
from airflow_batchcode.emulator.config import EmulatorConfig
from airflow_batchcode.emulator.faults import FaultInjector, FaultMiddleware, settings_from
from airflow_batchcode.emulator.signing import SignatureError, Signer

log = logging.getLogger(__name__)

TOPICS = (
    ("anzsco", "Australian and New Zealand Standard Classification of Occupations, 2022"),
    ("osca", "Occupation Standard Classification for Australia, 2024"),
)
INPUT_BUCKET = "abs-coder-input"
OUTPUT_BUCKET = "abs-coder-output"
SSE_HEADER = "x-amz-server-side-encryption"
KMS_HEADER = "x-amz-server-side-encryption-aws-kms-key-id"
MAX_TEXT = 300
MAX_REALTIME_RECORDS = 300
MAX_REALTIME_BODY = 1 << 20
MAX_LINE = 1 << 20
CHUNK = 1 << 20

MSG_BAD_BODY = "Invalid request body"
MSG_NO_TOPIC = "The specified topic does not exist"
MSG_NO_MODEL = "The specified model does not exist"
MSG_WRONG_TOPIC = "Selected model does not match the input topic."
MSG_NO_OPERATION = "The specified operation does not exist"
MSG_INTERNAL = "Error performing request"
MSG_DENY = "User is not authorized to access this resource with an explicit deny"
MSG_INVALID_JSON = "Invalid JSON data format. "

_OP_KEY = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})/([a-z.]+)$")
_encode = msgspec.json.encode
_decode = msgspec.json.decode


# --- errors and responses ------------------------------------------------------------------------


class ApiError(Exception):
    """An API Gateway style error: ``{"message": ...}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class OAuthError(Exception):
    """A token endpoint error: ``{"error": ..., "error_description"?: ...}``."""

    def __init__(self, status: int, error: str, description: str | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.body = {"error": error} if description is None else {"error": error, "error_description": description}


class StorageError(Exception):
    """An S3 style XML error."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response encoded with msgspec."""
    return Response(_encode(content), status_code=status, media_type="application/json", headers=headers)


def xml_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """An S3 error document."""
    body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return Response(body, status_code=status, media_type="application/xml", headers=headers)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- clock and limits ----------------------------------------------------------------------------


class Clock:
    """Wall time plus an offset that tests move forward with ``POST /_emulator/clock``."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        """Current emulator time, seconds since the epoch."""
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset += seconds


class TokenBucket:
    """``rate`` requests per second with a burst of one."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.level = 1.0
        self.last: float | None = None

    def take(self, now: float) -> float:
        """Spend one request; return 0 if allowed, else the seconds to wait."""
        if self.last is not None:
            self.level = min(1.0, self.level + (now - self.last) * self.rate)
        self.last = now
        if self.level >= 1.0:
            self.level -= 1.0
            return 0.0
        return (1.0 - self.level) / self.rate


# --- operations ----------------------------------------------------------------------------------


@dataclass
class Operation:
    """One batch operation. Its visible state is computed from these facts and the clock."""

    id: str
    client: str
    topic: str
    model: CodingModel
    kms_key_arn: str
    created_at: float
    uploaded_at: float | None = None
    outcome: Literal["complete", "failed"] | None = None
    ready_at: float = 0.0
    error: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)
    files_deleted: bool = False

    def state(self, now: float, awaiting_timeout: float) -> str:
        """The operation's status at time ``now``."""
        if self.uploaded_at is None:
            return "timed_out" if now > self.created_at + awaiting_timeout else "awaiting_input"
        if self.outcome is None or now < self.ready_at:
            return "in_progress"
        return self.outcome


class FileSink:
    """Writes a new file in large pieces, reserving disk space ahead of the data.

    On ext4 and similar, allocating blocks while writing is several times slower than writing
    into space reserved with ``posix_fallocate``; the reservation is trimmed on close. The async
    methods write on a worker thread while the caller keeps receiving (double buffering).

    :param path: the file to create (truncated if it exists).
    :param expected: the final size when known.
    """

    STEP = 64 << 20
    PIECE = 4 * CHUNK

    def __init__(self, path: Path, expected: int | None = None) -> None:
        self._fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        self._parts: list[bytes] = []
        self._buffered = 0
        self.size = 0
        self._reserved = 0
        self._can_reserve = hasattr(os, "posix_fallocate")
        self._pending: asyncio.Future[None] | None = None
        if expected:
            self._reserve(expected)

    def _reserve(self, upto: int) -> None:
        if not self._can_reserve or upto <= self._reserved:
            return
        try:
            os.posix_fallocate(self._fd, self._reserved, upto - self._reserved)
            self._reserved = upto
        except OSError:
            self._can_reserve = False

    def _take(self) -> tuple[list[bytes], int]:
        parts, offset = self._parts, self.size
        self.size += self._buffered
        self._parts, self._buffered = [], 0
        return parts, offset

    def _put(self, parts: list[bytes], offset: int) -> None:
        data = memoryview(b"".join(parts))
        if offset + len(data) > self._reserved:
            self._reserve(offset + len(data) + self.STEP)
        while data:
            written = os.pwrite(self._fd, data, offset)
            data, offset = data[written:], offset + written

    def write(self, data: bytes) -> None:
        """Buffer ``data``; written out in pieces of at least :attr:`PIECE` bytes."""
        self._parts.append(data)
        self._buffered += len(data)
        if self._buffered >= self.PIECE:
            self._put(*self._take())

    async def awrite(self, data: bytes) -> None:
        """Like :meth:`write`, but the piece is written on a thread while the caller goes on."""
        self._parts.append(data)
        self._buffered += len(data)
        if self._buffered >= self.PIECE:
            if self._pending is not None:
                await self._pending
            self._pending = asyncio.get_running_loop().run_in_executor(None, self._put, *self._take())

    def close(self) -> None:
        """Write what is buffered, trim the reservation and close."""
        try:
            if self._buffered:
                self._put(*self._take())
            if self._reserved > self.size:
                os.ftruncate(self._fd, self.size)
        finally:
            os.close(self._fd)

    async def aclose(self) -> None:
        """Wait for the pending piece, then :meth:`close`."""
        try:
            if self._pending is not None:
                await self._pending
        finally:
            self.close()

    def __enter__(self) -> FileSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InputError(Exception):
    """The input file as a whole is unusable: the operation fails with this message."""


# --- coding of records ---------------------------------------------------------------------------


def record_error(record: dict[str, Any]) -> str | None:
    """The per-record rule a record breaks, or ``None``."""
    for name in ("occp_text", "tasks_text"):
        if not isinstance(record.get(name), str):
            return f"Field {name} must be a string"
    rid = record.get("recordId")
    if rid is not None and not isinstance(rid, str):
        return "Field recordId must be a string"
    occp: str = record["occp_text"]
    tasks: str = record["tasks_text"]
    if len(occp) + len(tasks) > MAX_TEXT:
        return f"Input text exceeds the maximum length of {MAX_TEXT} characters"
    if not (occp.isascii() and tasks.isascii() and occp.isprintable() and tasks.isprintable()):
        return "Input text contains characters outside printable ASCII"
    if not occp.strip() and not tasks.strip():
        return "At least one of occp_text and tasks_text must be non-empty"
    return None


def code_record(record: dict[str, Any], model: CodingModel) -> dict[str, Any]:
    """One valid record → the service's response object (without ``input``)."""
    outcome = model.code(record["occp_text"], record["tasks_text"])
    if outcome.status == "successful" and outcome.result is not None:
        return {"recordId": record.get("recordId"), "codeStatus": "successful", "result": outcome.result.to_json()}
    return {
        "recordId": record.get("recordId"),
        "codeStatus": "unsuccessful",
        "suggestions": [s.to_json() for s in outcome.suggestions],
    }


_FIELD_SETS = (frozenset({"occp_text", "tasks_text"}), frozenset({"occp_text", "tasks_text", "recordId"}))


def _fields(keys: frozenset[str]) -> str:
    return "[" + ", ".join(sorted(keys)) + "]"


class _LineCoder:
    """Turns input lines into output lines, caching the encoded tail of repeated inputs."""

    def __init__(self, model: CodingModel) -> None:
        self.model = model
        self.counts: Counter[str] = Counter()
        self._tails: dict[tuple[str, str], tuple[bytes, str]] = {}

    def unknown(self, raw: bytes) -> bytes:
        self.counts["errorCount"] += 1
        text = raw.rstrip(b"\r\n").decode("utf-8", "replace")
        line = {"recordId": "unknown", "codeStatus": "unsuccessful", "input": text, "error": MSG_INVALID_JSON}
        return _encode(line) + b"\n"

    def record(self, record: dict[str, Any]) -> bytes:
        rid = record.get("recordId")
        occp, tasks = record.get("occp_text"), record.get("tasks_text")
        cached = None
        if type(occp) is str and type(tasks) is str and (rid is None or type(rid) is str):
            cached = self._tails.get((occp, tasks))
        if cached is None:
            error = record_error(record)
            if error is not None:
                self.counts["errorCount"] += 1
                inputs = {"occp_text": occp, "tasks_text": tasks}
                out = {"recordId": rid, "codeStatus": "unsuccessful", "input": inputs, "error": error}
                return _encode(out) + b"\n"
            cached = self._tail(record)
            if len(self._tails) >= 100_000:
                self._tails.clear()
            self._tails[(occp, tasks)] = cached  # type: ignore[index]
        tail, status = cached
        self.counts[status] += 1
        return b'{"recordId":' + _encode(rid) + tail

    def _tail(self, record: dict[str, Any]) -> tuple[bytes, str]:
        response = code_record(record, self.model)
        response.pop("recordId")
        status = response.pop("codeStatus")
        body = {"codeStatus": status, "input": {"occp_text": record["occp_text"], "tasks_text": record["tasks_text"]}}
        body.update(response)
        encoded = _encode(body)
        return b"," + encoded[1:] + b"\n", "successfulCount" if status == "successful" else "unsuccessfulCount"


def _lines(source: Any) -> Iterator[tuple[int, bytes]]:
    """Numbered lines of a binary file, each at most :data:`MAX_LINE` bytes (the rest is skipped)."""
    number = 0
    readline = source.readline
    while True:
        raw = readline(MAX_LINE)
        if not raw:
            return
        number += 1
        if len(raw) == MAX_LINE and not raw.endswith(b"\n"):
            rest = raw
            while rest and not rest.endswith(b"\n"):
                rest = readline(MAX_LINE)
        yield number, raw


def code_file(source: Path, target: Path, model: CodingModel, cancelled: threading.Event) -> dict[str, int]:
    """Code a JSONL input file into the output file, streaming; return the counts.

    Raises :class:`InputError` for a file that must fail as a whole.
    """
    coder = _LineCoder(model)
    expected: frozenset[str] | None = None
    expected_line = 0
    records = 0
    batch: list[bytes] = []
    with open(source, "rb", buffering=CHUNK) as src, FileSink(target) as out:
        for number, raw in _lines(src):
            line = raw.strip()
            if not line:
                continue
            records += 1
            try:
                value = _decode(line)
            except (msgspec.DecodeError, UnicodeDecodeError):
                value = None
            if type(value) is not dict:
                batch.append(coder.unknown(raw))
            else:
                keys = frozenset(value)
                if keys != expected:
                    if expected is not None:
                        raise InputError(
                            f"All lines of input must contain the same fields: line {number} has "
                            f"{_fields(keys)} but line {expected_line} has {_fields(expected)}"
                        )
                    if keys not in _FIELD_SETS:
                        raise InputError(
                            "Input records must have the fields occp_text and tasks_text, and optionally "
                            f"recordId: line {number} has {_fields(keys)}"
                        )
                    expected, expected_line = keys, number
                batch.append(coder.record(value))
            if len(batch) >= 4096:
                out.write(b"".join(batch))
                batch.clear()
                if cancelled.is_set():
                    raise InputError("The service is shutting down")
        out.write(b"".join(batch))
    if records == 0:
        raise InputError("The input file is empty")
    return {
        "recordCount": records,
        "successfulCount": coder.counts["successfulCount"],
        "unsuccessfulCount": coder.counts["unsuccessfulCount"],
        "errorCount": coder.counts["errorCount"],
    }


# --- the service's state -------------------------------------------------------------------------


def _parse_basic(header: str | None) -> tuple[str, str] | None:
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client, sep, secret = decoded.partition(":")
    return (client, secret) if sep else None


class AbsService:
    """Everything the emulator remembers. Request handlers run on the event loop; coding runs on
    a thread pool and touches operations only under ``lock``.

    :param config: the emulator's settings.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.clock = Clock()
        self.signer = Signer()
        self.faults = FaultInjector(settings_from(config), seed=config.seed)
        self.models = load_models()
        self.model_topics = {m.info.model_id: topic for topic, models in self.models.items() for m in models}
        self.owns_data_dir = config.data_dir is None
        self.data_dir = Path(config.data_dir or tempfile.mkdtemp(prefix="abs-emulator-"))
        for bucket in (INPUT_BUCKET, OUTPUT_BUCKET):
            (self.data_dir / bucket).mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.operations: dict[str, Operation] = {}
        self._tokens: dict[str, tuple[str, float]] = {}
        self._token_times: dict[str, list[float]] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._quota: dict[str, tuple[int, int]] = {}
        self._cancelled = threading.Event()
        self._pool = ThreadPoolExecutor(config.processing_workers, thread_name_prefix="abs-emulator")
        self.counters: dict[str, Counter[str]] = {
            name: Counter()
            for name in ("operations_created", "tokens_issued", "requests", "uploads", "downloads", "throttled")
        }

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the workers and delete the data directory if the service created it."""
        self._cancelled.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- auth and limits -------------------------------------------------------------------------

    def issue_token(self, authorization: str | None, form: dict[str, str]) -> dict[str, Any]:
        """The OAuth2 client-credentials grant."""
        creds = _parse_basic(authorization)
        if creds is None and "client_id" in form:
            creds = (form["client_id"], form.get("client_secret", ""))
        known = self.config.clients.get(creds[0]) if creds else None
        if creds is None or known is None or not hmac.compare_digest(known.encode(), creds[1].encode()):
            raise OAuthError(401, "invalid_client")
        client = creds[0]
        grant = form.get("grant_type")
        if grant is None:
            raise OAuthError(400, "invalid_request")
        if grant != "client_credentials":
            raise OAuthError(400, "unsupported_grant_type")
        now = self.clock.now()
        recent = [t for t in self._token_times.get(client, []) if t > now - 3600]
        if self.config.token_limit and len(recent) >= self.config.token_limit:
            raise OAuthError(403, "access_denied", "Too many token requests")
        recent.append(now)
        self._token_times[client] = recent
        if len(self._tokens) > 10_000:
            self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
        token = secrets.token_urlsafe(36)
        self._tokens[token] = (client, now + self.config.token_ttl)
        self.counters["tokens_issued"][client] += 1
        return {"access_token": token, "expires_in": int(self.config.token_ttl), "token_type": "Bearer"}

    def admit(self, authorization: str | None) -> str:
        """Authenticate an API call and apply the rate limit and daily quota; return the client."""
        if not authorization:
            raise ApiError(401, "Unauthorized")
        now = self.clock.now()
        entry = self._tokens.get(authorization)
        if entry is None or entry[1] <= now:
            raise ApiError(403, MSG_DENY)
        client = entry[0]
        if self.config.rate_limit > 0:
            bucket = self._buckets.setdefault(client, TokenBucket(self.config.rate_limit))
            wait = bucket.take(now)
            if wait > 0:
                self.counters["throttled"]["rate_limit"] += 1
                raise ApiError(429, "Too Many Requests", {"Retry-After": str(max(1, int(-(-wait // 1))))})
        if self.config.daily_quota > 0:
            day = int(now // 86400)
            seen_day, used = self._quota.get(client, (day, 0))
            used = used if seen_day == day else 0
            if used >= self.config.daily_quota:
                self.counters["throttled"]["daily_quota"] += 1
                raise ApiError(429, "Limit Exceeded")
            self._quota[client] = (day, used + 1)
        return client

    # -- topics and models -----------------------------------------------------------------------

    def model(self, topic: str, model_id: str | None) -> CodingModel:
        """The topic's model ``model_id`` (latest when ``None``), or the contract's 404/409."""
        models = self.models.get(topic)
        if models is None:
            raise ApiError(404, MSG_NO_TOPIC)
        if model_id is None:
            return models[-1]
        for candidate in models:
            if candidate.info.model_id == model_id:
                return candidate
        if model_id in self.model_topics:
            raise ApiError(409, MSG_WRONG_TOPIC)
        raise ApiError(404, MSG_NO_MODEL)

    # -- operations ------------------------------------------------------------------------------

    def _url(self, base: str, method: str, bucket: str, key: str, headers: dict[str, str] | None = None) -> str:
        path = f"/_storage/{bucket}/{key}"
        now = self.clock.now()
        signed = self.signer.presign(method, path, ttl=self.config.url_ttl, now=now, signed_headers=headers)
        return (self.config.public_url or base).rstrip("/") + signed

    def create_operation(self, client: str, topic: str, model: CodingModel, base: str) -> dict[str, str]:
        """Create an operation awaiting its input; return the documented response."""
        op = Operation(
            id=str(uuid.uuid4()),
            client=client,
            topic=topic,
            model=model,
            kms_key_arn=f"arn:aws:kms:ap-southeast-2:123456789012:key/{uuid.uuid4()}",
            created_at=self.clock.now(),
        )
        with self.lock:
            self.operations[op.id] = op
        self.counters["operations_created"][client] += 1
        upload_headers = {SSE_HEADER: "aws:kms", KMS_HEADER: op.kms_key_arn}
        url = self._url(base, "PUT", INPUT_BUCKET, f"{op.id}/input.jsonl", upload_headers)
        return {"requestUploadUrl": url, "operationId": op.id, "bucketKmsKeyArn": op.kms_key_arn}

    def status(self, client: str, topic: str, operation_id: str, base: str) -> dict[str, str]:
        """The documented status object of one of ``client``'s operations."""
        op = self.operations.get(operation_id)
        if op is None or op.client != client or op.topic != topic:
            raise ApiError(404, MSG_NO_OPERATION)
        now = self.clock.now()
        state = op.state(now, self.config.awaiting_timeout)
        if state == "complete":
            self._expire(op, now)
            return {
                "operationStatus": state,
                "responseDownloadUrl": self._url(base, "GET", OUTPUT_BUCKET, f"{op.id}/output.jsonl"),
                "metadataDownloadUrl": self._url(base, "GET", OUTPUT_BUCKET, f"{op.id}/metadata.json"),
            }
        if state == "failed":
            return {"operationStatus": state, "error": op.error or MSG_INTERNAL}
        return {"operationStatus": state}

    def _expire(self, op: Operation, now: float) -> bool:
        """Delete a complete operation's files once retention has passed; True when gone."""
        if not op.files_deleted and now > op.ready_at + self.config.retention:
            with self.lock:
                op.files_deleted = True
            shutil.rmtree(self.data_dir / OUTPUT_BUCKET / op.id, ignore_errors=True)
        return op.files_deleted

    def states(self) -> Counter[str]:
        """How many operations are in each state now."""
        now = self.clock.now()
        with self.lock:
            ops = list(self.operations.values())
        return Counter(op.state(now, self.config.awaiting_timeout) for op in ops)

    # -- storage ---------------------------------------------------------------------------------

    def _operation_for(self, bucket: str, key: str) -> tuple[Operation | None, str]:
        if bucket not in (INPUT_BUCKET, OUTPUT_BUCKET):
            raise StorageError(404, "NoSuchBucket", "The specified bucket does not exist")
        match = _OP_KEY.match(key)
        if match is None:
            return None, ""
        return self.operations.get(match.group(1)), match.group(2)

    def _verify(self, request: Request, expected: dict[str, str] | None = None) -> None:
        """Check the presigned URL; ``expected`` header values stand in for the request's, so a
        genuine URL sent with wrong encryption headers gets the headers' own error."""
        headers: Any = request.headers
        if expected:
            headers = {**{k.lower(): v for k, v in request.headers.items()}, **expected}
        try:
            self.signer.verify(request.method, request.url.path, request.query_params, headers, self.clock.now())
        except SignatureError as exc:
            raise StorageError(exc.status, exc.code, exc.message) from None

    async def upload(self, request: Request, bucket: str, key: str) -> Response:
        """A presigned PUT of an operation's input, streamed to disk."""
        try:
            response = await self._upload(request, bucket, key)
        except StorageError:
            self.counters["uploads"]["refused"] += 1
            raise
        self.counters["uploads"]["accepted"] += 1
        return response

    async def _upload(self, request: Request, bucket: str, key: str) -> Response:
        op, name = self._operation_for(bucket, key)
        if op is None or bucket != INPUT_BUCKET or name != "input.jsonl":
            self._verify(request)
            raise StorageError(403, "AccessDenied", "Access Denied")
        self._verify(request, {SSE_HEADER: "aws:kms", KMS_HEADER: op.kms_key_arn})
        _check_encryption_headers(request, op)
        if op.state(self.clock.now(), self.config.awaiting_timeout) != "awaiting_input":
            raise StorageError(403, "AccessDenied", "The operation is no longer accepting input")
        header = request.headers.get("content-length", "")
        declared = int(header) if header.isdigit() else None
        if declared is not None and declared > self.config.max_upload_bytes:
            raise _too_large()
        folder = self.data_dir / INPUT_BUCKET / op.id
        folder.mkdir(exist_ok=True)
        part = folder / f"input.{secrets.token_hex(6)}.part"
        try:
            size = await self._receive(request, part, declared)
            if declared is not None and size != declared:
                raise StorageError(400, "IncompleteBody", "You did not provide the number of bytes specified")
            with self.lock:
                if op.uploaded_at is not None:
                    raise StorageError(403, "AccessDenied", "The operation is no longer accepting input")
                part.replace(folder / "input.jsonl")
                op.uploaded_at = self.clock.now()
        finally:
            part.unlink(missing_ok=True)
        self._pool.submit(self._process, op)
        return Response(status_code=200, headers={"ETag": f'"{secrets.token_hex(16)}"'})

    async def _receive(self, request: Request, part: Path, expected: int | None) -> int:
        limit = self.config.max_upload_bytes
        size = 0
        sink = FileSink(part, expected)
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large()
                await sink.awrite(chunk)
        except ClientDisconnect:
            raise StorageError(400, "IncompleteBody", "The upload was interrupted") from None
        finally:
            await sink.aclose()
        return size

    async def download(self, request: Request, bucket: str, key: str) -> Response:
        """A presigned GET (or HEAD) of a complete operation's output or metadata file."""
        self._verify(request)
        op, name = self._operation_for(bucket, key)
        now = self.clock.now()
        if (
            op is None
            or bucket != OUTPUT_BUCKET
            or name not in ("output.jsonl", "metadata.json")
            or op.state(now, self.config.awaiting_timeout) != "complete"
            or self._expire(op, now)
        ):
            raise StorageError(404, "NoSuchKey", "The specified key does not exist.")
        try:
            handle = open(self.data_dir / OUTPUT_BUCKET / op.id / name, "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise StorageError(404, "NoSuchKey", "The specified key does not exist.") from None
        size = os.fstat(handle.fileno()).st_size
        headers = {
            "Content-Type": "application/octet-stream",
            "ETag": op.etags.get(name, '""'),
            "Last-Modified": formatdate(op.ready_at, usegmt=True),
            "Accept-Ranges": "bytes",
            "Server": "AmazonS3",
        }
        span = _parse_range(request.headers.get("range"), size)
        if span is None:
            start, length, status = 0, size, 200
        elif span == (-1, -1):
            handle.close()
            raise StorageError(
                416, "InvalidRange", "The requested range is not satisfiable", {"Content-Range": f"bytes */{size}"}
            )
        else:
            start, length, status = span[0], span[1] - span[0] + 1, 206
            headers["Content-Range"] = f"bytes {span[0]}-{span[1]}/{size}"
        headers["Content-Length"] = str(length)
        if request.method == "GET":
            self.counters["downloads"][name] += 1
        return FileSlice(handle, start, length, status, headers)

    # -- processing (worker threads) -------------------------------------------------------------

    def _process(self, op: Operation) -> None:
        source = self.data_dir / INPUT_BUCKET / op.id / "input.jsonl"
        folder = self.data_dir / OUTPUT_BUCKET / op.id
        error: str | None = None
        counts: dict[str, int] = {}
        try:
            folder.mkdir(parents=True, exist_ok=True)
            counts = code_file(source, folder / "output.jsonl", op.model, self._cancelled)
        except InputError as exc:
            error = str(exc)
        except Exception:
            log.exception("coding operation %s failed", op.id)
            error = MSG_INTERNAL
        finished = self.clock.now()
        ready = max(finished, (op.uploaded_at or finished) + self.config.processing_delay)
        if error is None:
            metadata = {
                "operationId": op.id,
                "topic": op.topic,
                "model": op.model.info.to_json(),
                **counts,
                "createdAt": _iso(op.created_at),
                "completedAt": _iso(ready),
            }
            (folder / "metadata.json").write_bytes(_encode(metadata))
        else:
            shutil.rmtree(folder, ignore_errors=True)
        source.unlink(missing_ok=True)
        with self.lock:
            op.counts = counts
            op.error = error
            op.etags = {name: f'"{secrets.token_hex(16)}"' for name in ("output.jsonl", "metadata.json")}
            op.ready_at = ready
            op.outcome = "complete" if error is None else "failed"

    # -- admin -----------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters for ``GET /_emulator/stats``."""
        c = self.counters
        return {
            "operations_created": dict(c["operations_created"]),
            "operations_by_state": dict(self.states()),
            "requests": dict(c["requests"]),
            "faults": dict(self.faults.injected),
            "tokens_issued": dict(c["tokens_issued"]),
            "uploads": {"accepted": c["uploads"]["accepted"], "refused": c["uploads"]["refused"]},
            "downloads": dict(c["downloads"]),
            "throttled": dict(c["throttled"]),
            "clock_offset": self.clock.offset,
        }


def _too_large() -> StorageError:
    return StorageError(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")


def _check_encryption_headers(request: Request, op: Operation) -> None:
    sse = request.headers.get(SSE_HEADER)
    if sse is None:
        raise StorageError(400, "InvalidArgument", f"Missing required header {SSE_HEADER}: aws:kms")
    if sse != "aws:kms":
        raise StorageError(400, "InvalidArgument", f"Header {SSE_HEADER} must be aws:kms")
    kms = request.headers.get(KMS_HEADER)
    if kms is None:
        raise StorageError(400, "InvalidArgument", f"Missing required header {KMS_HEADER}")
    if kms != op.kms_key_arn:
        raise StorageError(
            400, "InvalidArgument", f"Header {KMS_HEADER} does not match this operation's bucketKmsKeyArn"
        )


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range → (first, last) inclusive; ``None`` to send everything; (-1, -1) if
    unsatisfiable. Malformed and multi-part ranges are ignored, as S3 does."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, sep, last = header[6:].strip().partition("-")
    if not sep or not (first.isdigit() or last.isdigit()) or (first and not first.isdigit()):
        return None
    if last and not last.isdigit():
        return None
    if not first:
        suffix = int(last)
        if suffix == 0:
            return (-1, -1)
        return (max(0, size - suffix), size - 1)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return (-1, -1)
    return (start, end)


class FileSlice(Response):
    """Streams part of an open file in large chunks, stopping early if the client goes away."""

    def __init__(self, handle: Any, start: int, length: int, status: int, headers: dict[str, str]) -> None:
        super().__init__(status_code=status, headers=headers)
        self.handle = handle
        self.start = start
        self.length = length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self.handle:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if scope["method"] == "HEAD" or self.length == 0:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            gone = asyncio.Event()

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone.set()

            watcher = asyncio.ensure_future(watch())
            try:
                self.handle.seek(self.start)
                left = self.length
                while left > 0 and not gone.is_set():
                    chunk = self.handle.read(min(CHUNK, left))
                    if not chunk:
                        raise OSError("file shrank while being sent")
                    left -= len(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
            finally:
                watcher.cancel()


# --- the ASGI app --------------------------------------------------------------------------------


class _CountRequests:
    """Counts requests by route template for the stats."""

    def __init__(self, app: ASGIApp, service: AbsService) -> None:
        self.app = app
        self.counter = service.counters["requests"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                route = scope.get("route")
                path = getattr(route, "path", "<unmatched>")
                self.counter[f"{scope['method']} {path}"] += 1


class MessageBody(BaseModel):
    """Every API error."""

    message: str


class OAuthErrorBody(BaseModel):
    """Token endpoint errors."""

    error: str
    error_description: str | None = None


class TokenBody(BaseModel):
    """A client-credentials token."""

    access_token: str
    expires_in: int
    token_type: str


class TopicBody(BaseModel):
    """One coding topic."""

    uriName: str
    fullName: str


class ModelBody(BaseModel):
    """One coding model (``ModelInfo.to_json()``)."""

    modelId: str
    modelVersion: Any = None
    modelReleaseDate: Any = None
    modelType: Any = None
    inputFormat: Any = None
    topicStandard: Any = None
    topicVersion: Any = None


class CreatedBody(BaseModel):
    """A new batch operation."""

    requestUploadUrl: str
    operationId: str
    bucketKmsKeyArn: str


class StatusBody(BaseModel):
    """An operation's status."""

    operationStatus: Literal["awaiting_input", "in_progress", "complete", "failed", "timed_out"]
    responseDownloadUrl: str | None = None
    metadataDownloadUrl: str | None = None
    error: str | None = None


class CodeBody(BaseModel):
    """One code."""

    codeCategory: str
    codeLabel: str
    codeConfidence: float


class CodeResponseBody(BaseModel):
    """The coding of one record."""

    recordId: str | None
    codeStatus: Literal["successful", "unsuccessful"]
    result: CodeBody | None = None
    suggestions: list[CodeBody] | None = None


class RecordBody(BaseModel):
    """One input record."""

    recordId: str | None = None
    occp_text: str
    tasks_text: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": MessageBody} for status in (400, 401, 403, 404, 409, 429, 500)
}
_RECORD_SCHEMA = RecordBody.model_json_schema()
_CODE_REQUEST = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        _RECORD_SCHEMA,
                        {"type": "array", "items": _RECORD_SCHEMA, "minItems": 1, "maxItems": MAX_REALTIME_RECORDS},
                    ]
                }
            }
        },
    }
}
_TOKEN_REQUEST = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {"grant_type": {"type": "string", "enum": ["client_credentials"]}},
                    "required": ["grant_type"],
                }
            }
        },
    }
}


def _service(request: Request) -> AbsService:
    service: AbsService = request.app.state.abs
    return service


async def _api_client(
    request: Request,
    authorization: Annotated[str | None, Header(description="The raw access token (no Bearer prefix)")] = None,
) -> str:
    return _service(request).admit(authorization)


ApiClient = Annotated[str, Depends(_api_client)]


def _base(request: Request) -> str:
    return str(request.base_url)


async def _read_limited(request: Request, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(400, MSG_BAD_BODY)
        parts.append(chunk)
    return b"".join(parts)


def _parameters(*path: str) -> dict[str, Any]:
    """OpenAPI parameters of a route that reads its path and ``Authorization`` itself."""
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in path
    ]
    params.append(
        {
            "name": "authorization",
            "in": "header",
            "required": False,
            "description": "The raw access token (no Bearer prefix)",
            "schema": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        }
    )
    return {"parameters": params}


def _status(request: Request) -> Response:
    service = _service(request)
    client = service.admit(request.headers.get("authorization"))
    params = request.path_params
    topic = params["topic"]
    service.model(topic, params.get("model"))
    return json_response(service.status(client, topic, params["operation_id"], _base(request)))


def _realtime(service: AbsService, model: CodingModel, body: bytes) -> Response:
    try:
        data = _decode(body)
    except msgspec.DecodeError:
        raise ApiError(400, MSG_BAD_BODY) from None
    records = data if isinstance(data, list) else [data]
    if not 1 <= len(records) <= MAX_REALTIME_RECORDS:
        raise ApiError(400, MSG_BAD_BODY)
    for index, record in enumerate(records):
        if not isinstance(record, dict) or set(record) - {"recordId"} != {"occp_text", "tasks_text"}:
            raise ApiError(400, MSG_BAD_BODY)
        error = record_error(record)
        if error is not None:
            raise ApiError(400, f"{error} (record {index})")
    coded = [code_record(record, model) for record in records]
    return json_response(coded if isinstance(data, list) else coded[0])


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return json_response({"message": exc.message}, exc.status, exc.headers)

    @app.exception_handler(OAuthError)
    async def oauth_error(request: Request, exc: OAuthError) -> Response:
        return json_response(exc.body, exc.status)

    @app.exception_handler(StorageError)
    async def storage_error(request: Request, exc: StorageError) -> Response:
        return xml_error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return json_response({"message": MSG_BAD_BODY}, 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        status = exc.status_code if exc.status_code < 500 else 500
        message = str(exc.detail) if status < 500 else MSG_INTERNAL
        return json_response({"message": message}, status, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        return json_response({"message": MSG_INTERNAL}, 500)


def _install_api(app: FastAPI) -> None:
    @app.post(
        "/oauth2/token",
        tags=["auth"],
        responses={200: {"model": TokenBody}, **{s: {"model": OAuthErrorBody} for s in (400, 401, 403)}},
        openapi_extra=_TOKEN_REQUEST,
    )
    async def token(request: Request) -> Response:
        """OAuth2 client-credentials grant (``Authorization: Basic``)."""
        body = await _read_limited(request, 64 << 10)
        form = dict(parse_qsl(body.decode("latin-1"), keep_blank_values=True))
        issued = _service(request).issue_token(request.headers.get("authorization"), form)
        return json_response(issued, headers={"Cache-Control": "no-store"})

    @app.get("/v1/topics", tags=["topics"], responses={200: {"model": list[TopicBody]}, **_ERRORS})
    async def topics(client: ApiClient) -> Response:
        """The coding topics."""
        return json_response([{"uriName": name, "fullName": full} for name, full in TOPICS])

    @app.get("/v1/topics/{topic}/models", tags=["topics"], responses={200: {"model": list[ModelBody]}, **_ERRORS})
    async def models(request: Request, topic: str, client: ApiClient) -> Response:
        """The topic's models, oldest first."""
        service = _service(request)
        service.model(topic, None)
        return json_response([m.info.to_json() for m in service.models[topic]])

    @app.post("/v1/topics/{topic}/batch-code", tags=["batch"], responses={200: {"model": CreatedBody}, **_ERRORS})
    async def create_latest(request: Request, topic: str, client: ApiClient) -> Response:
        """Create a batch operation with the topic's latest model."""
        service = _service(request)
        return json_response(service.create_operation(client, topic, service.model(topic, None), _base(request)))

    @app.post(
        "/v1/topics/{topic}/models/{model}/batch-code",
        tags=["batch"],
        responses={200: {"model": CreatedBody}, **_ERRORS},
    )
    async def create_with_model(request: Request, topic: str, model: str, client: ApiClient) -> Response:
        """Create a batch operation with the given model."""
        service = _service(request)
        return json_response(service.create_operation(client, topic, service.model(topic, model), _base(request)))

    # The status routes are the hot path (thousands of pollers): they read their parameters
    # themselves instead of through FastAPI's per-request validation, and document them by hand.
    @app.get(
        "/v1/topics/{topic}/batch-code/operations/{operation_id}",
        tags=["batch"],
        responses={200: {"model": StatusBody}, **_ERRORS},
        openapi_extra=_parameters("topic", "operation_id"),
    )
    async def status_latest(request: Request) -> Response:
        """An operation's status."""
        return _status(request)

    @app.get(
        "/v1/topics/{topic}/models/{model}/batch-code/operations/{operation_id}",
        tags=["batch"],
        responses={200: {"model": StatusBody}, **_ERRORS},
        openapi_extra=_parameters("topic", "model", "operation_id"),
    )
    async def status_with_model(request: Request) -> Response:
        """An operation's status (the model is checked, then ignored)."""
        return _status(request)

    code_responses: dict[int | str, dict[str, Any]] = {
        200: {"model": CodeResponseBody | list[CodeResponseBody]},
        **_ERRORS,
    }

    @app.post("/v1/topics/{topic}/code", tags=["real-time"], responses=code_responses, openapi_extra=_CODE_REQUEST)
    async def code_latest(request: Request, topic: str, client: ApiClient) -> Response:
        """Code one record or up to 300 with the topic's latest model."""
        service = _service(request)
        model = service.model(topic, None)
        return _realtime(service, model, await _read_limited(request, MAX_REALTIME_BODY))

    @app.post(
        "/v1/topics/{topic}/models/{model}/code",
        tags=["real-time"],
        responses=code_responses,
        openapi_extra=_CODE_REQUEST,
    )
    async def code_with_model(request: Request, topic: str, model: str, client: ApiClient) -> Response:
        """Code one record or up to 300 with the given model."""
        service = _service(request)
        chosen = service.model(topic, model)
        return _realtime(service, chosen, await _read_limited(request, MAX_REALTIME_BODY))


def _install_storage(app: FastAPI) -> None:
    @app.put("/_storage/{bucket}/{key:path}", include_in_schema=False)
    async def put_object(request: Request, bucket: str, key: str) -> Response:
        return await _service(request).upload(request, bucket, key)

    @app.api_route("/_storage/{bucket}/{key:path}", methods=["GET", "HEAD"], include_in_schema=False)
    async def get_object(request: Request, bucket: str, key: str) -> Response:
        return await _service(request).download(request, bucket, key)


def _install_admin(app: FastAPI) -> None:
    async def json_object(request: Request) -> dict[str, Any]:
        try:
            data = _decode(await _read_limited(request, 64 << 10))
        except msgspec.DecodeError:
            raise ApiError(400, MSG_BAD_BODY) from None
        if not isinstance(data, dict):
            raise ApiError(400, MSG_BAD_BODY)
        return data

    @app.get("/_emulator/health", include_in_schema=False)
    async def health() -> Response:
        return json_response({"status": "ok"})

    @app.get("/_emulator/faults", include_in_schema=False)
    async def get_faults(request: Request) -> Response:
        return json_response(_service(request).faults.to_json())

    @app.post("/_emulator/faults", include_in_schema=False)
    async def set_faults(request: Request) -> Response:
        changes = await json_object(request)
        try:
            return json_response(_service(request).faults.update(changes))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    @app.get("/_emulator/stats", include_in_schema=False)
    async def stats(request: Request) -> Response:
        return json_response(_service(request).stats())

    @app.get("/_emulator/clock", include_in_schema=False)
    async def get_clock(request: Request) -> Response:
        clock = _service(request).clock
        return json_response({"offset": clock.offset, "now": _iso(clock.now())})

    @app.post("/_emulator/clock", include_in_schema=False)
    async def advance_clock(request: Request) -> Response:
        data = await json_object(request)
        seconds = data.get("advance")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ApiError(400, "advance must be a number of seconds")
        clock = _service(request).clock
        try:
            clock.advance(float(seconds))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return json_response({"offset": clock.offset, "now": _iso(clock.now())})


def create_abs_app(config: EmulatorConfig | None = None) -> FastAPI:
    """Build the emulator app. ``app.state.abs`` is its :class:`AbsService`; call its ``close()``
    when done (the server does)."""
    service = AbsService(config or EmulatorConfig())
    app = FastAPI(
        title="ABS Occupation Coding Service (emulator)",
        version="1.0",
        description="Async batch coding, real-time coding and OAuth2 tokens, as documented by the ABS.",
    )
    app.state.abs = service
    _install_handlers(app)
    _install_api(app)
    _install_storage(app)
    _install_admin(app)
    app.add_middleware(_CountRequests, service=service)
    app.add_middleware(FaultMiddleware, injector=service.faults)
    return app
