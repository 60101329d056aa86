"""The presigned S3-style storage under ``/_storage``: an operation's upload and its downloads.

Every call checks the presigned URL first; errors are :class:`StorageError` (S3 XML). Uploads are
streamed to disk and then handed to the service's coders; downloads honour one ``Range``.
"""

from __future__ import annotations

import re
import secrets
from email.utils import formatdate
from pathlib import Path
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from airflow_batchcode.emulator.abs_service import AbsService, Operation
from airflow_batchcode.emulator.contract import INPUT_BUCKET, KMS_HEADER, OUTPUT_BUCKET, SSE_HEADER, StorageError
from airflow_batchcode.emulator.files import FileSink, invalid_range, ranged_file
from airflow_batchcode.emulator.signing import SignatureError, Signer

_OP_KEY = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})/([a-z.]+)$")


async def upload(service: AbsService, request: Request, bucket: str, key: str) -> Response:
    """A presigned PUT of an operation's input, streamed to disk."""
    try:
        response = await _upload(service, request, bucket, key)
    except StorageError:
        service.counters["uploads"]["refused"] += 1
        raise
    service.counters["uploads"]["accepted"] += 1
    return response


async def download(service: AbsService, request: Request, bucket: str, key: str) -> Response:
    """A presigned GET (or HEAD) of a complete operation's output or metadata file."""
    verify_presigned(request, service.signer, service.clock.now())
    op, name = _operation_for(service, bucket, key)
    now = service.clock.now()
    if (
        op is None
        or bucket != OUTPUT_BUCKET
        or name not in ("output.jsonl", "metadata.json")
        or op.state(now, service.config.awaiting_timeout) != "complete"
        or service.expire_output(op, now)
    ):
        raise StorageError(404, "NoSuchKey", "The specified key does not exist.")
    try:
        handle = open(service.data_dir / OUTPUT_BUCKET / op.id / name, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise StorageError(404, "NoSuchKey", "The specified key does not exist.") from None
    headers = {
        "Content-Type": "application/octet-stream",
        "ETag": op.etags.get(name, '""'),
        "Last-Modified": formatdate(op.ready_at, usegmt=True),
        "Accept-Ranges": "bytes",
        "Server": "AmazonS3",
    }
    response = ranged_file(handle, request.headers.get("range"), headers, invalid_range)
    if request.method == "GET":
        service.counters["downloads"][name] += 1
    return response


def _operation_for(service: AbsService, bucket: str, key: str) -> tuple[Operation | None, str]:
    if bucket not in (INPUT_BUCKET, OUTPUT_BUCKET):
        raise StorageError(404, "NoSuchBucket", "The specified bucket does not exist")
    match = _OP_KEY.match(key)
    if match is None:
        return None, ""
    return service.operations.get(match.group(1)), match.group(2)


def verify_presigned(request: Request, signer: Signer, now: float, expected: dict[str, str] | None = None) -> None:
    """Check a ``/_storage`` request's presigned URL (ABS's and Gravity's); refusals are S3's XML errors.

    ``expected`` header values stand in for the request's, so a genuine URL sent with wrong
    encryption headers gets the headers' own error.
    """
    headers: Any = request.headers
    if expected:
        headers = {**{k.lower(): v for k, v in request.headers.items()}, **expected}
    try:
        signer.verify(request.method, request.url.path, request.query_params, headers, now)
    except SignatureError as exc:
        raise StorageError(exc.status, exc.code, exc.message) from None


async def _upload(service: AbsService, request: Request, bucket: str, key: str) -> Response:
    op, name = _operation_for(service, bucket, key)
    if op is None or bucket != INPUT_BUCKET or name != "input.jsonl":
        verify_presigned(request, service.signer, service.clock.now())
        raise StorageError(403, "AccessDenied", "Access Denied")
    expected = {SSE_HEADER: "aws:kms", KMS_HEADER: op.kms_key_arn}
    verify_presigned(request, service.signer, service.clock.now(), expected)
    _check_encryption_headers(request, op)
    if op.state(service.clock.now(), service.config.awaiting_timeout) != "awaiting_input":
        raise StorageError(403, "AccessDenied", "The operation is no longer accepting input")
    header = request.headers.get("content-length", "")
    declared = int(header) if header.isdigit() else None
    limit = service.config.max_upload_bytes
    if declared is not None and declared > limit:
        raise _too_large()
    folder = service.data_dir / INPUT_BUCKET / op.id
    folder.mkdir(exist_ok=True)
    part = folder / f"input.{secrets.token_hex(6)}.part"
    try:
        size = await _receive(request, part, declared, limit)
        if declared is not None and size != declared:
            raise StorageError(400, "IncompleteBody", "You did not provide the number of bytes specified")
        with service.lock:
            if op.uploaded_at is not None:
                raise StorageError(403, "AccessDenied", "The operation is no longer accepting input")
            part.replace(folder / "input.jsonl")
            op.uploaded_at = service.clock.now()
    finally:
        part.unlink(missing_ok=True)
    service.start_coding(op)
    return Response(status_code=200, headers={"ETag": f'"{secrets.token_hex(16)}"'})


async def _receive(request: Request, part: Path, expected: int | None, limit: int) -> int:
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
