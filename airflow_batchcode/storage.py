"""Paths and URIs for manifests and results: local paths, ``file://`` and ``s3://`` alike.

Everything goes through Airflow's ``ObjectStoragePath``; local files take the fast path
(plain ``pathlib``, atomic renames).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from airflow.sdk import ObjectStoragePath

COPY_BUFFER = 1 << 20


def as_storage_path(location: str | os.PathLike[str] | ObjectStoragePath) -> ObjectStoragePath:
    """An ``ObjectStoragePath`` for a local path, ``file://`` URI or object store URI."""
    if isinstance(location, ObjectStoragePath):
        return location
    text = os.fspath(location)
    if "://" not in text:
        text = "file://" + os.path.abspath(text)
    return ObjectStoragePath(text)


def local_path(location: str | os.PathLike[str] | ObjectStoragePath) -> Path | None:
    """The local filesystem path behind ``location``, or ``None`` for a remote object store."""
    path = as_storage_path(location)
    if path.protocol in ("file", "local", ""):
        return Path(path.path)
    return None


@contextmanager
def open_for_reading(location: str | os.PathLike[str] | ObjectStoragePath) -> Iterator[Path | IO[bytes]]:
    """Yield a local ``Path`` (fast path) or a seekable binary file of the object."""
    local = local_path(location)
    if local is not None:
        if not local.is_file():
            raise FileNotFoundError(f"No such file: {local}")
        yield local
        return
    with as_storage_path(location).open("rb") as handle:
        yield handle


def write_atomically(location: str | os.PathLike[str] | ObjectStoragePath, produce: Callable[[IO[bytes]], Any]) -> Any:
    """Write a whole file via ``produce(sink)``; readers never see a partial file.

    The data goes to a temporary file first (beside the target when local, then renamed
    over it; otherwise streamed to the object store once complete), so a retry always
    replaces, never appends, and a crash leaves the previous file or nothing.
    """
    local = local_path(location)
    directory = local.parent if local is not None else None
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".batchcode-", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "w+b") as sink:
            result = produce(sink)
            sink.flush()
            os.fsync(sink.fileno())
        if local is not None:
            os.replace(tmp_name, local)
        else:
            target = as_storage_path(location)
            with open(tmp_name, "rb") as source, target.open("wb") as remote:
                shutil.copyfileobj(source, remote, COPY_BUFFER)
        return result
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
