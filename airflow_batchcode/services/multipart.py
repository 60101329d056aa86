"""A ``multipart/form-data`` request body that is streamed, re-readable and of known length.

``requests`` builds ``files=`` bodies in memory; a manifest can be gigabytes. :class:`MultipartBody`
computes its ``Content-Length`` up front from the parts' sizes and yields the encoded body in
chunks, reading file parts from disk as it goes, so memory stays flat and a retry simply iterates
it again. The encoding follows RFC 7578 (``Content-Disposition: form-data; name=...``, CRLF line
breaks, quotes and line breaks in names percent-encoded as the HTML standard does).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from airflow_batchcode.exceptions import ConfigurationError, TransportError
from airflow_batchcode.services.http.bodies import CHUNK_BYTES

CRLF = b"\r\n"


@dataclass(frozen=True)
class FieldPart:
    """An in-memory part (a form field such as a JSON document)."""

    name: str
    value: bytes
    content_type: str | None = None


@dataclass(frozen=True)
class FilePart:
    """A part streamed from a file: a path, or a seekable binary file read from its current position."""

    name: str
    filename: str
    source: Path | IO[bytes] = field(repr=False)
    content_type: str = "application/octet-stream"


Part = FieldPart | FilePart


def _quote(value: str) -> str:
    """A ``Content-Disposition`` parameter value, quoted; ``"``, CR and LF percent-encoded (HTML standard)."""
    return '"' + value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A") + '"'


def _head(boundary: bytes, part: Part) -> bytes:
    disposition = f"form-data; name={_quote(part.name)}"
    if isinstance(part, FilePart):
        disposition += f"; filename={_quote(part.filename)}"
    lines = [b"--" + boundary, f"Content-Disposition: {disposition}".encode()]
    if part.content_type:
        lines.append(f"Content-Type: {part.content_type}".encode())
    return CRLF.join(lines) + CRLF + CRLF


class MultipartBody:
    """The encoded body of ``parts``; iterate it to stream it, ``len()`` for ``Content-Length``.

    :param parts: the fields and files, in order.
    :param boundary: the delimiter; a random 32-hex-digit one by default (it must not occur in any part).
    :param chunk_bytes: read size for file parts.
    """

    def __init__(self, parts: Sequence[Part], *, boundary: str | None = None, chunk_bytes: int = CHUNK_BYTES) -> None:
        if not parts:
            raise ConfigurationError("A multipart body needs at least one part")
        self.boundary = boundary or secrets.token_hex(16)
        if not 1 <= len(self.boundary) <= 70 or not self.boundary.isascii():
            raise ConfigurationError("A multipart boundary is 1 to 70 ASCII characters")
        self._parts = tuple(parts)
        self._chunk = chunk_bytes
        encoded = self.boundary.encode()
        self._heads = [_head(encoded, part) for part in self._parts]
        self._sizes = [_size(part) for part in self._parts]
        self._starts = [_start(part) for part in self._parts]
        self._tail = b"--" + encoded + b"--" + CRLF
        self._length = sum(len(h) + s + len(CRLF) for h, s in zip(self._heads, self._sizes, strict=True)) + len(
            self._tail
        )
        self.sent = 0

    @property
    def content_type(self) -> str:
        """The request's ``Content-Type`` header value."""
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        self.sent = 0
        for head, part, size, start in zip(self._heads, self._parts, self._sizes, self._starts, strict=True):
            yield self._count(head)
            if isinstance(part, FieldPart):
                yield self._count(part.value)
            elif isinstance(part.source, Path):
                with part.source.open("rb") as handle:
                    yield from self._file(handle, size, part.filename)
            else:
                part.source.seek(start)
                yield from self._file(part.source, size, part.filename)
            yield self._count(CRLF)
        yield self._count(self._tail)

    def _count(self, data: bytes) -> bytes:
        self.sent += len(data)
        return data

    def _file(self, handle: IO[bytes], size: int, filename: str) -> Iterator[bytes]:
        """Exactly ``size`` bytes of ``handle``: a file that shrank or grew would break the announced length."""
        left = size
        while left > 0:
            chunk = handle.read(min(self._chunk, left))
            if not chunk:
                raise TransportError(f"The file part {filename!r} shrank while it was being sent")
            left -= len(chunk)
            yield self._count(chunk)


def _start(part: Part) -> int:
    """Where an open file part starts (it is re-read from there on every iteration)."""
    if isinstance(part, FilePart) and not isinstance(part.source, Path):
        return part.source.tell()
    return 0


def _size(part: Part) -> int:
    if isinstance(part, FieldPart):
        return len(part.value)
    if isinstance(part.source, Path):
        return part.source.stat().st_size
    if not part.source.seekable():
        raise ConfigurationError("A multipart file part must be a path or a seekable binary file")
    start = part.source.tell()
    end = part.source.seek(0, os.SEEK_END)
    part.source.seek(start)
    return end - start
