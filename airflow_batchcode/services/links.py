"""Reading results from presigned links, which expire: a refused link is replaced by a fresh one, once;
whether a file is still there is asked with one byte."""

from __future__ import annotations

from collections.abc import Callable
from typing import IO

from airflow_batchcode.exceptions import AuthenticationError, NotFoundError
from airflow_batchcode.services.http.errors import s3_message_reader
from airflow_batchcode.services.http.sync import SyncTransport


def download_fresh(
    download: Callable[[str, IO[bytes]], int],
    link: Callable[[], str],
    fresh_link: Callable[[], str],
    sink: IO[bytes],
    *,
    gone: str,
    operation_id: str,
) -> int:
    """Stream ``link()`` into ``sink`` with ``download``; when it is refused (expired), start over once
    from ``fresh_link()``.

    :param gone: the message of the :class:`NotFoundError` raised when the file no longer exists.
    :return: the bytes written.
    """
    start = sink.tell()
    try:
        try:
            return download(link(), sink)
        except AuthenticationError:
            sink.seek(start)
            sink.truncate()
            return download(fresh_link(), sink)
    except NotFoundError as exc:
        raise NotFoundError(
            gone, status_code=exc.status_code, service_message=exc.service_message, operation_id=operation_id
        ) from None


def read_first_byte(transport: SyncTransport, url: str, operation_id: str) -> None:
    """A one-byte ranged GET of a presigned ``url`` (nothing large is transferred); it raises the typed
    error of the store's answer when the file cannot be read."""
    response = transport.request(
        "GET",
        url,
        headers=lambda: {"Range": "bytes=0-0"},
        what="result availability check",
        operation_id=operation_id,
        read_error=s3_message_reader,
        stream=True,
    )
    response.close()
