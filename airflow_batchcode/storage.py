"""Paths and URIs for manifests and results: local paths, ``file://`` and ``s3://`` alike.

Everything goes through Airflow's ``ObjectStoragePath``; local files take the fast path
(plain ``pathlib``, atomic renames). A staged file that a later task cannot find raises
:class:`~airflow_batchcode.exceptions.StagedFileMissingError`, which names the setting to change.
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

from airflow_batchcode.exceptions import StagedFileMissingError
from airflow_batchcode.services.redact import redact_url

COPY_BUFFER = 1 << 20
STAGING_ADVICE = (
    "Each task of a run may execute on a different worker (CeleryExecutor, KubernetesExecutor), so the "
    "staging folder must be one every worker sees: set [batchcode] staging in airflow.cfg (or "
    "AIRFLOW__BATCHCODE__STAGING), or staging= on coding_dag/coding_task_group, to a shared volume or an "
    "object store URI such as s3://bucket/batchcode."
)


def airflow_home() -> str:
    """``$AIRFLOW_HOME`` as Airflow itself resolved it (``~/airflow`` when unset), on every component.

    Workers that ship only the Task SDK have no ``airflow.configuration``; they resolve the home
    by the same rule.
    """
    try:
        from airflow.configuration import AIRFLOW_HOME
    except ImportError:
        return os.path.expanduser(os.path.expandvars(os.environ.get("AIRFLOW_HOME", "~/airflow")))
    return str(AIRFLOW_HOME)


def staged_file_missing(location: str | os.PathLike[str] | ObjectStoragePath, what: str) -> StagedFileMissingError:
    """The error for a staged file (``what``: "manifest", "positions", ...) that this task cannot see."""
    shown = redact_url(str(location))
    return StagedFileMissingError(
        f"The {what} {shown} was written by an earlier task of this run but is not visible to this task. "
        + STAGING_ADVICE
    )


@contextmanager
def open_staged(
    location: str | os.PathLike[str] | ObjectStoragePath, what: str, *, buffering: int = COPY_BUFFER
) -> Iterator[IO[bytes]]:
    """A buffered binary reader of a file an earlier task staged; missing → :class:`StagedFileMissingError`."""
    local = local_path(location)
    try:
        # Opened outside ``with`` so that only the open, not the caller's block, maps FileNotFoundError.
        handle: IO[bytes] = (
            open(local, "rb", buffering=buffering)  # noqa: SIM115
            if local is not None
            else as_storage_path(location).open("rb")
        )
    except FileNotFoundError:
        raise staged_file_missing(location, what) from None
    with handle:
        yield handle


def read_staged_text(location: str | os.PathLike[str] | ObjectStoragePath, what: str) -> str:
    """The whole (small) text file an earlier task staged; missing → :class:`StagedFileMissingError`."""
    with open_staged(location, what) as handle:
        return handle.read().decode()


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
def open_for_reading(
    location: str | os.PathLike[str] | ObjectStoragePath, what: str = "manifest"
) -> Iterator[Path | IO[bytes]]:
    """Yield a local ``Path`` (fast path) or a seekable binary file of the object.

    A missing file raises :class:`StagedFileMissingError` naming ``what`` and the setting to change.
    """
    local = local_path(location)
    if local is not None:
        if not local.is_file():
            raise staged_file_missing(location, what)
        yield local
        return
    try:
        handle = as_storage_path(location).open("rb")
    except FileNotFoundError:
        raise staged_file_missing(location, what) from None
    with handle:
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
