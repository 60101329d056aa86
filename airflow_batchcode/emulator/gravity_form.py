"""A Gravity job submission's ``multipart/form-data`` body, received as it streams in: the ``data``
part into memory (capped), the ``file`` part straight to disk."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from airflow_batchcode.emulator.files import FileSink
from airflow_batchcode.emulator.gravity_service import MAX_NAME, GravityError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MAX_DATA_PART = 64 << 10


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
