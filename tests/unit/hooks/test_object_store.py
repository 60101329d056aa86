"""The Airflow-side object store: extras → store, staging and reading through an ``aws`` connection (moto on loopback)."""

from __future__ import annotations

import importlib.util
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_batchcode.exceptions import AuthenticationError, ConfigurationError, NotFoundError
from airflow_batchcode.hooks.object_store import GcsObjectStore, S3ObjectStore, object_store_for, parse_s3_url
from airflow_batchcode.services.base import ObjectStore
from tests.s3 import S3Sandbox, s3_sandbox
from tests.support import env_connection


@pytest.fixture(scope="module")
def sandbox() -> Iterator[S3Sandbox]:
    with s3_sandbox("object_store_s3", check_credentials=True) as box:
        yield box


def store_for(sandbox: S3Sandbox, prefix: str = "staged/manifests", conn_id: str | None = None) -> S3ObjectStore:
    store = object_store_for(
        {"manifest_location": f"s3://{sandbox.bucket}/{prefix}", "storage_conn_id": conn_id or sandbox.conn_id}
    )
    assert isinstance(store, S3ObjectStore) and isinstance(store, ObjectStore)
    return store


def test_extras_describe_the_store() -> None:
    assert object_store_for({}) is None and object_store_for({"manifest_location": ""}) is None
    store = object_store_for({"manifest_location": "s3://my-bucket/some/prefix/"})
    assert isinstance(store, S3ObjectStore)
    assert (store.bucket, store.prefix, store.conn_id) == ("my-bucket", "some/prefix", "aws_default")
    assert store.key_for("a.jsonl") == "some/prefix/a.jsonl"
    assert S3ObjectStore("b").key_for("a.jsonl") == "a.jsonl"
    named = object_store_for({"manifest_location": "s3://b/p", "storage_conn_id": "minio"})
    assert repr(named) == "S3ObjectStore(s3://b/p, conn_id='minio')"
    for name in ("", "a/b.jsonl", ".."):
        with pytest.raises(ConfigurationError):
            store.key_for(name)
    for location in ("https://bucket/x", "s3:///prefix", "/local/dir", "s3://b/p?x=1"):
        with pytest.raises(ConfigurationError, match="manifest_location"):
            object_store_for({"manifest_location": location})
    assert parse_s3_url("s3://b/k/ey.jsonl") == ("b", "k/ey.jsonl")
    with pytest.raises(ConfigurationError):
        parse_s3_url("gs://b/k")


def test_gs_locations_need_the_google_provider() -> None:
    if importlib.util.find_spec("airflow.providers.google") is None:
        with pytest.raises(ConfigurationError, match="apache-airflow-providers-google"):
            object_store_for({"manifest_location": "gs://bucket/prefix"})
    else:
        store = object_store_for({"manifest_location": "gs://bucket/prefix"})
        assert isinstance(store, GcsObjectStore) and store.conn_id == "google_cloud_default"


def test_stage_streams_a_file_and_returns_where_and_how_to_read_it(sandbox: S3Sandbox, tmp_path: Path) -> None:
    store = store_for(sandbox)
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"data_url": "data:,a"}\n' * 1000)
    staged = store.stage(path, "chunk-1.jsonl")
    assert staged.url == f"s3://{sandbox.bucket}/staged/manifests/chunk-1.jsonl"
    assert sandbox.read("staged/manifests/chunk-1.jsonl") == path.read_bytes()
    assert staged.credentials == {
        "access_key_id": sandbox.access_key_id,
        "secret_access_key": sandbox.secret_access_key,
        "region": "us-east-1",
    }
    assert sandbox.secret_access_key not in repr(staged) and sandbox.secret_access_key not in repr(store)

    handle = io.BytesIO(b"skip me|" + b"line\n" * 10)
    handle.seek(len(b"skip me|"))
    store.stage(handle, "from-stream.jsonl")
    assert sandbox.read("staged/manifests/from-stream.jsonl") == b"line\n" * 10


def test_open_streams_objects_and_missing_ones_are_not_found(sandbox: S3Sandbox) -> None:
    body = b"".join(b"%06d\n" % n for n in range(300_000))
    sandbox.client().put_object(Bucket=sandbox.bucket, Key="results/big.jsonl", Body=body)
    store = store_for(sandbox)
    with store.open(f"s3://{sandbox.bucket}/results/big.jsonl") as reader:
        assert reader.readline() == b"000000\n"
        rest = reader.read()
    assert len(rest) + 7 == len(body)
    with pytest.raises(NotFoundError, match="no such object"), store.open(f"s3://{sandbox.bucket}/results/none"):
        pass
    with pytest.raises(NotFoundError), store.open("s3://no-such-bucket-anywhere/x"):
        pass


def test_wrong_credentials_are_refused_without_showing_them(sandbox: S3Sandbox) -> None:
    wrong = sandbox.connection("object_store_wrong", password="definitely-not-the-secret")
    with env_connection("object_store_wrong", wrong):
        store = store_for(sandbox, conn_id="object_store_wrong")
        with pytest.raises(AuthenticationError) as staging:
            store.stage(io.BytesIO(b"x\n"), "nope.jsonl")
        with pytest.raises(AuthenticationError) as reading, store.open(f"s3://{sandbox.bucket}/anything"):
            pass
    for caught in (staging, reading):
        assert "definitely-not-the-secret" not in str(caught.value)
        assert "storage connection" in str(caught.value)


def test_a_session_token_is_passed_on(sandbox: S3Sandbox) -> None:
    conn = sandbox.connection("object_store_session")
    conn["extra"] = {**conn["extra"], "aws_session_token": "session-token-value"}
    with env_connection("object_store_session", conn):
        credentials = store_for(sandbox, conn_id="object_store_session").credentials()
    assert credentials["session_token"] == "session-token-value"


class FakeBlob:
    def __init__(self, bucket: FakeBucket, name: str) -> None:
        self.bucket, self.name = bucket, name

    def upload_from_file(self, handle: Any, content_type: str) -> None:
        self.bucket.objects[self.name] = handle.read()

    def upload_from_string(self, data: bytes, content_type: str) -> None:
        self.bucket.objects[self.name] = data

    def open(self, mode: str) -> io.BytesIO:
        if self.name not in self.bucket.objects:
            raise type("NotFound", (Exception,), {})()
        return io.BytesIO(self.bucket.objects[self.name])


class FakeBucket:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def blob(self, name: str) -> FakeBlob:
        return FakeBlob(self, name)


class FakeGcsHook:
    """Stands in for the Google provider's GCSHook (not installed here)."""

    def __init__(self, keyfile: Any) -> None:
        self.buckets: dict[str, FakeBucket] = {}
        self.keyfile = keyfile

    def get_conn(self) -> Any:
        hook = self

        class Client:
            def bucket(self, name: str) -> FakeBucket:
                return hook.buckets.setdefault(name, FakeBucket())

        return Client()

    def get_connection(self, conn_id: str) -> Any:
        return type("Conn", (), {"extra_dejson": {"keyfile_dict": self.keyfile} if self.keyfile else {}})()


def test_the_gcs_store_stages_reads_and_hands_over_the_service_account_key() -> None:
    store = GcsObjectStore("gbucket", "pre/fix", "gcp")
    store.__dict__["hook"] = FakeGcsHook({"type": "service_account", "private_key": "-----BEGIN"})
    staged = store.stage(io.BytesIO(b"line\n"), "c.jsonl")
    assert staged.url == "gs://gbucket/pre/fix/c.jsonl"
    assert json.loads(staged.credentials["service_account_json"])["type"] == "service_account"
    assert "BEGIN" not in repr(staged) and "BEGIN" not in repr(store)
    with store.open("gs://gbucket/pre/fix/c.jsonl") as reader:
        assert reader.read() == b"line\n"
    with pytest.raises(NotFoundError), store.open("gs://gbucket/none"):
        pass
    assert store.put("r.json", b"{}") == "gs://gbucket/pre/fix/r.json"
    with store.open("gs://gbucket/pre/fix/r.json") as reader:
        assert reader.read() == b"{}"
    keyless = GcsObjectStore("gbucket")
    keyless.__dict__["hook"] = FakeGcsHook(None)
    with pytest.raises(ConfigurationError, match="service account key"):
        keyless.stage(io.BytesIO(b"x"), "c.jsonl")
