"""The Gravity-AI on-demand jobs API, emulated as a FastAPI app (``create_app(config)``).

Routes (documented, seed 003): ``POST /api/v1/jobs`` (multipart: ``data`` JSON + ``file``),
``GET /api/v1/jobs/latest``, ``GET /api/v1/jobs/{jobId}``, ``PUT /api/v1/jobs/{jobId}`` (rename),
``GET /api/v1/jobs/result-link/{jobId}``. Every answer is the envelope
``{"data", "isError", "errorMessage"}``; the caller's ``X-Api-Key`` picks the tenant.

Decisions the documentation leaves open (the model itself is described in :mod:`gravity_service`):

- **Auth.** A missing or unknown ``X-Api-Key`` → 401 envelope ("An API key is required…" / "Invalid API key").
- **HTTP errors** (envelope with ``isError: true``): 400 for a body that is not ``multipart/form-data``,
  a missing ``data`` or ``file`` part, ``data`` that is not a JSON object, a missing ``mimeType``, a
  malformed mapping, or a rename without a name; 404 for an unknown job id or another tenant's (the
  same answer); 413 for a body over ``max_upload_bytes``; 500 "An unexpected error occurred".
- **Errors inside a 200** (``isError: true``, ``data: null``): an unknown project ``version`` on
  submission; ``result-link`` for a job that is not complete yet ("…is not complete yet…"), that
  failed, or whose output was deleted after ``retention`` ("…is no longer available…").
- **Job failures** (created, then status ``error`` with ``errorMessage``): a ``mimeType`` other than
  ``text/csv``, an empty file, a file that is not UTF-8 CSV, a mapped input without the model's features,
  an ``outputMapping`` naming something the model does not output. Such jobs bill nothing.
- **Status** is spelt as in the documentation's examples: ``incomplete``, ``success``, ``error``, with a
  ``statusMessage``. ``processing_delay`` 0 makes a job ``success`` before the POST answers.
- **Latest** lists the tenant's :data:`LATEST_LIMIT` most recent jobs, newest first.
- **Output** is served by the emulator under ``/_storage/gravity-user-data/…`` behind a presigned link
  in S3's older query form (``AWSAccessKeyId``, ``Expires``, ``Signature``, as in the documentation's
  example) valid ``url_ttl`` seconds, with ``Content-Length`` and one ``Range``; errors there are S3 XML
  (403 ``AccessDenied`` "Request has expired", 403 ``SignatureDoesNotMatch``, 404 ``NoSuchKey``, 416).
- **Uploads** are streamed to disk as they arrive (the ``data`` part, at most 64 KiB, is kept in memory).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from email.utils import formatdate
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from airflow_batchcode.emulator.admin import CountRequests, install_admin
from airflow_batchcode.emulator.config import EmulatorConfig
from airflow_batchcode.emulator.contract import ApiError, StorageError, json_response, xml_error
from airflow_batchcode.emulator.faults import FaultMiddleware
from airflow_batchcode.emulator.files import FileSink, FileSlice
from airflow_batchcode.emulator.gravity_service import (
    LATEST_LIMIT,
    MAX_NAME,
    MSG_INTERNAL,
    GravityError,
    GravityService,
    parse_request,
)
from airflow_batchcode.emulator.signing import SignatureError
from airflow_batchcode.emulator.storage import parse_range

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

__all__ = ["LATEST_LIMIT", "GravityService", "create_app"]

MAX_DATA_PART = 64 << 10
MAX_JSON_BODY = 64 << 10


def _service(request: Request) -> GravityService:
    service: GravityService = request.app.state.service
    return service


def envelope(data: Any, status: int = 200) -> Response:
    """A successful answer."""
    return json_response({"data": data, "isError": False, "errorMessage": None}, status)


def error_envelope(message: str, status: int) -> Response:
    """A failed answer (also with status 200, for the errors the service reports that way)."""
    return json_response({"data": None, "isError": True, "errorMessage": message}, status)


# --- multipart, streamed ------------------------------------------------------------------------


class FormReader:
    """Receives a job submission's ``multipart/form-data`` body: ``data`` into memory (capped),
    ``file`` straight to disk, other parts skipped.

    :param target: where the file part is written.
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        self.data: bytes | None = None
        self.filename: str | None = None
        self.problem: str | None = None
        self.ended = False
        self._sink: FileSink | None = None
        self._pending: list[bytes] = []
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._part: str | None = None
        self._buffer = bytearray()
        self._seen: set[str] = set()

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._part = None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name in ("data", "file") and name in self._seen:
            self.problem = f"The {name} part appears more than once"
        self._seen.add(name)
        self._part = name if name in ("data", "file") else None
        if self._part == "file" and self._sink is None:
            raw = options.get(b"filename", b"").decode("utf-8", "replace")
            self.filename = Path(raw.replace("\\", "/")).name[:MAX_NAME] or "input"
            self._sink = FileSink(self.target)
        elif self._part == "data":
            self._buffer = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "file":
            self._pending.append(data[start:end])
        elif self._part == "data":
            self._buffer += data[start:end]
            if len(self._buffer) > MAX_DATA_PART:
                self.problem = f"The data part is larger than {MAX_DATA_PART} bytes"

    def _part_end(self) -> None:
        if self._part == "data":
            self.data = bytes(self._buffer)
        self._part = None

    def _end(self) -> None:
        self.ended = True

    async def flush(self) -> None:
        """Write the file data received so far."""
        if self._sink is not None:
            for piece in self._pending:
                await self._sink.awrite(piece)
        self._pending.clear()

    async def aclose(self) -> None:
        if self._sink is not None:
            await self._sink.aclose()
            self._sink = None


async def receive_form(request: Request, target: Path, limit: int) -> FormReader:
    """Stream the submission into a :class:`FormReader`; a 400 or 413 :class:`GravityError` when it is unusable."""
    media, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if media != b"multipart/form-data" or not boundary:
        raise GravityError(400, "The request must be multipart/form-data with a data part and a file part")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise GravityError(413, f"The request is larger than the {limit} bytes allowed")
    reader = FormReader(target)
    parser = MultipartParser(boundary, reader.callbacks())
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise GravityError(413, f"The request is larger than the {limit} bytes allowed")
            parser.write(chunk)
            if reader.problem:
                raise GravityError(400, reader.problem)
            await reader.flush()
    except MultipartParseError:
        raise GravityError(400, "The multipart body is malformed") from None
    except ClientDisconnect:
        raise GravityError(400, "The upload was interrupted") from None
    finally:
        await reader.aclose()
    if not reader.ended:
        raise GravityError(400, "The multipart body is incomplete (no closing boundary)")
    if reader.data is None:
        raise GravityError(400, "The data part is missing")
    if reader.filename is None:
        raise GravityError(400, "The file part is missing")
    return reader


# --- routes -------------------------------------------------------------------------------------


def _tenant(request: Request) -> str:
    return _service(request).tenant(request.headers.get("x-api-key"))


async def _json_object(request: Request) -> dict[str, Any]:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BODY:
            raise GravityError(400, "The request body is too large")
    try:
        data = msgspec.json.decode(bytes(body))
    except (msgspec.DecodeError, RecursionError):
        raise GravityError(400, "The request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise GravityError(400, "The request body must be a JSON object")
    return data


def _install_api(app: FastAPI) -> None:
    @app.post("/api/v1/jobs", tags=["jobs"])
    async def submit(request: Request) -> Response:
        """Submit a job: multipart ``data`` (JSON: ``mimeType`` required; ``version``, ``name``, ``mapping``,
        ``outputMapping``) and ``file``."""
        service = _service(request)
        tenant = _tenant(request)
        target = service.uploads_dir / f"{uuid.uuid4().hex}.part"
        try:
            form = await receive_form(request, target, service.config.max_upload_bytes)
            job_request = parse_request(form.data or b"")
            job = await asyncio.to_thread(service.create_job, tenant, job_request, target, form.filename or "input")
        except GravityError:
            service.counters["uploads"]["refused"] += 1
            raise
        finally:
            target.unlink(missing_ok=True)
        service.counters["uploads"]["accepted"] += 1
        return envelope(service.describe(job))

    @app.get("/api/v1/jobs/latest", tags=["jobs"])
    async def latest(request: Request) -> Response:
        """The caller's most recent jobs, newest first."""
        service = _service(request)
        return envelope([service.describe(job) for job in service.latest(_tenant(request))])

    @app.get("/api/v1/jobs/result-link/{job_id}", tags=["jobs"])
    async def result_link(request: Request, job_id: str) -> Response:
        """A presigned link to the job's output file."""
        service = _service(request)
        job = service.job(_tenant(request), job_id)
        return envelope(service.result_link(job, str(request.base_url)))

    @app.get("/api/v1/jobs/{job_id}", tags=["jobs"])
    async def get_job(request: Request, job_id: str) -> Response:
        """One job."""
        service = _service(request)
        return envelope(service.describe(service.job(_tenant(request), job_id)))

    @app.put("/api/v1/jobs/{job_id}", tags=["jobs"])
    async def rename(request: Request, job_id: str) -> Response:
        """Rename a job: ``{"name": "..."}``."""
        service = _service(request)
        job = service.job(_tenant(request), job_id)
        name = (await _json_object(request)).get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            raise GravityError(400, f"name must be a non-empty string of at most {MAX_NAME} characters")
        service.rename(job, name)
        return envelope(service.describe(job))


def _install_storage(app: FastAPI) -> None:
    @app.api_route("/_storage/{bucket}/{key:path}", methods=["GET", "HEAD"], include_in_schema=False)
    async def get_object(request: Request, bucket: str, key: str) -> Response:
        service = _service(request)
        try:
            service.signer.verify(
                request.method, request.url.path, request.query_params, request.headers, service.clock.now()
            )
        except SignatureError as exc:
            raise StorageError(exc.status, exc.code, exc.message) from None
        found = service.output_file(bucket, key)
        try:
            handle = open(found[1], "rb") if found else None  # noqa: SIM115 - FileSlice closes it
        except FileNotFoundError:
            handle = None
        if found is None or handle is None:
            raise StorageError(404, "NoSuchKey", "The specified key does not exist.")
        job = found[0]
        size = os.fstat(handle.fileno()).st_size
        headers = {
            "Content-Type": "text/csv",
            "ETag": '"' + hashlib.md5(job.id.encode(), usedforsecurity=False).hexdigest() + '"',
            "Last-Modified": formatdate(job.ready_at, usegmt=True),
            "Accept-Ranges": "bytes",
        }
        span = parse_range(request.headers.get("range"), size)
        if span == (-1, -1):
            handle.close()
            raise StorageError(
                416, "InvalidRange", "The requested range is not satisfiable", {"Content-Range": f"bytes */{size}"}
            )
        start, length, status = 0, size, 200
        if span is not None:
            start, length, status = span[0], span[1] - span[0] + 1, 206
            headers["Content-Range"] = f"bytes {span[0]}-{span[1]}/{size}"
        headers["Content-Length"] = str(length)
        if request.method == "GET":
            service.counters["downloads"][job.tenant] += 1
        return FileSlice(handle, start, length, status, headers)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(GravityError)
    async def gravity_error(request: Request, exc: GravityError) -> Response:
        return error_envelope(exc.message, exc.status)

    @app.exception_handler(ApiError)
    async def admin_error(request: Request, exc: ApiError) -> Response:
        return error_envelope(exc.message, exc.status)

    @app.exception_handler(StorageError)
    async def storage_error(request: Request, exc: StorageError) -> Response:
        return xml_error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return error_envelope("The request is not valid", 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        status = exc.status_code if exc.status_code < 500 else 500
        return error_envelope(str(exc.detail) if status < 500 else MSG_INTERNAL, status)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        return error_envelope(MSG_INTERNAL, 500)


def create_app(config: EmulatorConfig | None = None) -> FastAPI:
    """Build the Gravity emulator. ``app.state.service`` is its :class:`GravityService`; call its ``close()``
    when done (the server does)."""
    service = GravityService(config or EmulatorConfig())
    app = FastAPI(
        title="Gravity-AI on-demand jobs API (emulator)",
        version="1.0",
        description="Hosted-model jobs over CSV: submit, poll, rename, list, and fetch the output by link.",
    )
    app.state.service = service
    _install_handlers(app)
    _install_api(app)
    _install_storage(app)
    install_admin(app, _service)
    app.add_middleware(CountRequests, counter=service.counters["requests"])
    app.add_middleware(FaultMiddleware, injector=service.faults)
    return app
