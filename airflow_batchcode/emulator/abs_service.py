"""The emulator's state: OAuth2 tokens, per-client limits, operations and their coding.

Request handlers run on the event loop; coding runs on a thread pool and touches operations only
under :attr:`AbsService.lock`. Operation states are computed on read from facts and the clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from airflow_batchcode.emulator.coding_model import CodingModel, load_models
from airflow_batchcode.emulator.common import Clock as Clock
from airflow_batchcode.emulator.common import EmulatedService
from airflow_batchcode.emulator.config import EmulatorConfig
from airflow_batchcode.emulator.contract import (
    INPUT_BUCKET,
    KMS_HEADER,
    MSG_DENY,
    MSG_INTERNAL,
    MSG_NO_MODEL,
    MSG_NO_OPERATION,
    MSG_NO_TOPIC,
    MSG_WRONG_TOPIC,
    OUTPUT_BUCKET,
    SSE_HEADER,
    ApiError,
    OAuthError,
    iso_time,
)
from airflow_batchcode.emulator.processing import InputError, code_file, code_request, reorder_lines
from airflow_batchcode.emulator.signing import Signer

log = logging.getLogger(__name__)

_encode = msgspec.json.encode


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


def _parse_basic(header: str | None) -> tuple[str, str] | None:
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except ValueError:  # binascii.Error, UnicodeDecodeError and non-ASCII input are all ValueErrors
        return None
    client, sep, secret = decoded.partition(":")
    return (client, secret) if sep else None


class AbsService(EmulatedService):
    """Everything the emulator remembers. Request handlers run on the event loop; coding runs on
    a thread pool and touches operations only under ``lock``.

    :param config: the emulator's settings.
    """

    name = "abs"
    counter_names = (
        "operations_created",
        "tokens_issued",
        "requests",
        "uploads",
        "downloads",
        "throttled",
        "records_coded",
    )

    def __init__(self, config: EmulatorConfig) -> None:
        super().__init__(config)
        self.signer = Signer()
        self.models = load_models()
        self.model_topics = {m.info.model_id: topic for topic, models in self.models.items() for m in models}
        self.data_dir = self._data_dir()
        for bucket in (INPUT_BUCKET, OUTPUT_BUCKET):
            (self.data_dir / bucket).mkdir(parents=True, exist_ok=True)
        self.operations: dict[str, Operation] = {}
        self._tokens: dict[str, tuple[str, float]] = {}
        self._token_times: dict[str, list[float]] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self.texts_coded: Counter[tuple[str, str]] = Counter()
        """How often each (job title, duties) pair was coded, batch and real time (``texts_coded`` in the stats)."""

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
        self.count_call(client, now)
        if self.config.rate_limit > 0:
            bucket = self._buckets.setdefault(client, TokenBucket(self.config.rate_limit))
            wait = bucket.take(now)
            if wait > 0:
                self.counters["throttled"]["rate_limit"] += 1
                raise ApiError(429, "Too Many Requests", {"Retry-After": str(max(1, int(-(-wait // 1))))})
        self.spend_quota(client, now, ApiError(429, "Limit Exceeded"))
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
            self.expire_output(op, now)
            return {
                "operationStatus": state,
                "responseDownloadUrl": self._url(base, "GET", OUTPUT_BUCKET, f"{op.id}/output.jsonl"),
                "metadataDownloadUrl": self._url(base, "GET", OUTPUT_BUCKET, f"{op.id}/metadata.json"),
            }
        if state == "failed":
            return {"operationStatus": state, "error": op.error or MSG_INTERNAL}
        return {"operationStatus": state}

    def expire_output(self, op: Operation, now: float) -> bool:
        """Delete a complete operation's files once retention has passed; True when gone."""
        if not op.files_deleted and now > op.ready_at + self.config.retention:
            with self.lock:
                op.files_deleted = True
            shutil.rmtree(self.data_dir / OUTPUT_BUCKET / op.id, ignore_errors=True)
        return op.files_deleted

    def states(self) -> Counter[str]:
        """How many operations are in each state now."""
        now = self.clock.now()
        return self.tally(self.operations.values(), lambda op: op.state(now, self.config.awaiting_timeout))

    # -- processing (worker threads) -------------------------------------------------------------

    def start_coding(self, op: Operation) -> None:
        """Code an uploaded operation's input on the worker pool."""
        self._pool.submit(self._process, op)

    def _process(self, op: Operation) -> None:
        source = self.data_dir / INPUT_BUCKET / op.id / "input.jsonl"
        folder = self.data_dir / OUTPUT_BUCKET / op.id
        error: str | None = None
        counts: dict[str, int] = {}
        try:
            folder.mkdir(parents=True, exist_ok=True)
            texts: Counter[tuple[str, str]] = Counter()
            counts = code_file(source, folder / "output.jsonl", op.model, self._cancelled, texts)
            with self.lock:
                self.texts_coded.update(texts)
                self.counters["records_coded"]["batch"] += texts.total()
            if self._reorders(op):
                reorder_lines(folder / "output.jsonl", f"{self.config.seed}:{op.id}")
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
                "createdAt": iso_time(op.created_at),
                "completedAt": iso_time(ready),
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

    def code_now(self, body: bytes, model: CodingModel) -> Any:
        """A real-time request's coding (:func:`code_request`), counted."""
        texts: Counter[tuple[str, str]] = Counter()
        coded = code_request(body, model, texts)
        with self.lock:
            self.texts_coded.update(texts)
            self.counters["records_coded"]["realtime"] += texts.total()
        return coded

    def _reorders(self, op: Operation) -> bool:
        """Whether ``reorder_output_rate`` picks this operation: a stable hash of the seed and its id."""
        digest = hashlib.sha256(f"{self.config.seed}:{op.id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.config.reorder_output_rate

    # -- admin -----------------------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        """Operations by state, and uploads as accepted and refused (both always shown)."""
        uploads = self.counters["uploads"]
        return {
            "texts_coded": {
                "distinct": len(self.texts_coded),
                "most_times_one_text": max(self.texts_coded.values(), default=0),
            },
            "operations_by_state": dict(self.states()),
            "uploads": {"accepted": uploads["accepted"], "refused": uploads["refused"]},
        }
