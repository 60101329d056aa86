"""HTTP plumbing shared by every service client: retries, rate limit, size caps, typed errors.

Sync calls go through ``requests``; async calls (the trigger's) through ``httpx``. Service
modules supply the URLs, headers and how to read their error bodies; this package owns the rest,
one concern a module:

=============  =================================================================================
``retry``      the retry engine: a sans-IO policy of tries, backoff, ``Retry-After``, lost answers
``settings``   :class:`HttpSettings` (timeouts, policy, size cap) and which URLs are accepted
``errors``     HTTP statuses and transport failures as typed, secret-free errors
``bodies``     capped and decoded reads, ``Content-Length`` checks, JSON, upload and download bodies
``base``       what both transports share: settings, and carrying out the engine's retry
``sync``       :class:`SyncTransport` (``requests``): API calls, uploads, resumable downloads
``aio``        :class:`AsyncTransport` (``httpx``): the trigger's status polls
``pool``       the async transports' keep-alive clients, shared per event loop
=============  =================================================================================

No message here ever carries a query string, a token or a request body. Nothing here imports
Airflow.
"""

from __future__ import annotations

from airflow_batchcode.services.http.aio import AsyncTransport
from airflow_batchcode.services.http.bodies import CHUNK_BYTES, FileBody
from airflow_batchcode.services.http.errors import ErrorReader, json_message_reader, s3_message_reader
from airflow_batchcode.services.http.retry import Attempts, Retry, RetryPolicy
from airflow_batchcode.services.http.settings import HttpSettings, check_url, is_loopback
from airflow_batchcode.services.http.sync import SyncTransport

__all__ = [
    "CHUNK_BYTES",
    "AsyncTransport",
    "Attempts",
    "ErrorReader",
    "FileBody",
    "HttpSettings",
    "Retry",
    "RetryPolicy",
    "SyncTransport",
    "check_url",
    "is_loopback",
    "json_message_reader",
    "s3_message_reader",
]
