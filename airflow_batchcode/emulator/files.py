"""Streaming files to and from disk: :class:`FileSink` writes, :class:`FileSlice` sends a byte range
(:func:`ranged_file` answers a GET with one, honouring a ``Range`` header)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from airflow_batchcode.emulator.contract import CHUNK, StorageError


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


_RANGE = re.compile(r"([0-9]*)-([0-9]*)")
"""A single byte range; ASCII digits only (``str.isdigit`` also accepts ``²``)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range → (first, last) inclusive; ``None`` to send everything; (-1, -1) if
    unsatisfiable. Malformed and multi-part ranges are ignored, as S3 does."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    match = _RANGE.fullmatch(header[6:].strip())
    if match is None or not (match.group(1) or match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
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


def invalid_range(headers: dict[str, str]) -> Exception:
    """S3's answer to a range the object cannot satisfy."""
    return StorageError(416, "InvalidRange", "The requested range is not satisfiable", headers)


def ranged_file(
    handle: Any, range_header: str | None, headers: dict[str, str], unsatisfiable: Callable[[dict[str, str]], Exception]
) -> FileSlice:
    """Answer with an open file, whole (200) or the one byte range asked for (206).

    :param headers: the answer's headers; ``Content-Range`` and ``Content-Length`` are added.
    :param unsatisfiable: the error for a range past the end, given its ``Content-Range`` header
        (the file is closed first).
    """
    size = os.fstat(handle.fileno()).st_size
    span = parse_range(range_header, size)
    if span == (-1, -1):
        handle.close()
        raise unsatisfiable({"Content-Range": f"bytes */{size}"})
    start, length, status = 0, size, 200
    if span is not None:
        start, length, status = span[0], span[1] - span[0] + 1, 206
        headers["Content-Range"] = f"bytes {span[0]}-{span[1]}/{size}"
    headers["Content-Length"] = str(length)
    return FileSlice(handle, start, length, status, headers)
