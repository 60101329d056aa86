"""A real S3 endpoint for tests: moto's server on loopback, a fresh bucket, and an Airflow ``aws`` connection.

moto keeps its state per process: every sandbox gets uniquely named buckets (and IAM user). With
``check_credentials`` the server checks signatures against an IAM user it creates, so a wrong key is
refused as AWS would; that switch is process-wide in moto, so such sandboxes must not overlap.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from typing import Any

import boto3
import requests

from tests.support import env_connection

REGION = "us-east-1"
ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


@dataclass
class S3Sandbox:
    """A bucket on a local S3 endpoint and the Airflow connection that reaches it."""

    endpoint_url: str
    bucket: str
    conn_id: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str = REGION
    buckets: list[str] = field(default_factory=list)

    def client(self, *, secret_access_key: str | None = None) -> Any:
        """A boto3 S3 client of the sandbox (optionally with another secret key)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
        )

    def new_bucket(self, stem: str = "extra") -> str:
        """Create another uniquely named bucket (deleted with the sandbox)."""
        name = f"{stem}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def read(self, key: str, bucket: str | None = None) -> bytes:
        """An object's content."""
        body: bytes = self.client().get_object(Bucket=bucket or self.bucket, Key=key)["Body"].read()
        return body

    def keys(self, prefix: str = "", bucket: str | None = None) -> list[str]:
        """Keys under ``prefix``."""
        listing = self.client().list_objects_v2(Bucket=bucket or self.bucket, Prefix=prefix)
        return [item["Key"] for item in listing.get("Contents", [])]

    def connection(self, conn_id: str, **changes: Any) -> dict[str, Any]:
        """The Airflow ``aws`` connection (as env JSON) of the sandbox, with ``changes`` applied."""
        value: dict[str, Any] = {
            "conn_type": "aws",
            "login": self.access_key_id,
            "password": self.secret_access_key,
            "extra": {"endpoint_url": self.endpoint_url, "region_name": self.region},
        }
        value.update(changes)
        return value


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _iam_user(endpoint_url: str) -> tuple[str, str]:
    """An IAM user allowed everything; its access key pair."""
    iam = boto3.client(
        "iam", endpoint_url=endpoint_url, region_name=REGION, aws_access_key_id="setup", aws_secret_access_key="setup"
    )
    user = f"tester-{uuid.uuid4().hex[:12]}"
    iam.create_user(UserName=user)
    policy = iam.create_policy(PolicyName=f"{user}-all", PolicyDocument=json.dumps(ALLOW_ALL))
    iam.attach_user_policy(UserName=user, PolicyArn=policy["Policy"]["Arn"])
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@contextmanager
def _auth_enforced(endpoint_url: str) -> Iterator[None]:
    answer = requests.post(f"{endpoint_url}/moto-api/reset-auth", data=b"0", timeout=5)
    answer.raise_for_status()
    previous = answer.json().get("PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT", "inf")
    try:
        yield
    finally:
        requests.post(f"{endpoint_url}/moto-api/reset-auth", data=str(previous).encode(), timeout=5)


@contextmanager
def s3_sandbox(
    conn_id: str = "batchcode_test_s3", *, check_credentials: bool = False, endpoint_url: str | None = None
) -> Iterator[S3Sandbox]:
    """A fresh bucket on a local S3 endpoint (a new moto server unless ``endpoint_url`` is given) and
    ``AIRFLOW_CONN_<conn_id>`` pointing at it.

    :param check_credentials: make the endpoint verify request signatures (wrong keys are refused).
    """
    with nullcontext(endpoint_url) if endpoint_url else s3_server() as url:
        if check_credentials:
            access_key, secret_key = _iam_user(url)
        else:
            access_key, secret_key = "testing-key-id", "testing-secret-key"
        sandbox = S3Sandbox(url, f"batchcode-{uuid.uuid4().hex[:12]}", conn_id, access_key, secret_key)
        enforced = _auth_enforced(url) if check_credentials else nullcontext()
        with enforced, env_connection(conn_id, sandbox.connection(conn_id)):
            sandbox.client().create_bucket(Bucket=sandbox.bucket)
            sandbox.buckets.append(sandbox.bucket)
            try:
                yield sandbox
            finally:
                _empty(sandbox)


def _empty(sandbox: S3Sandbox) -> None:
    """Delete the sandbox's objects and buckets (moto keeps them for the whole process otherwise)."""
    client = sandbox.client()
    for bucket in sandbox.buckets:
        with suppress(Exception):
            for key in sandbox.keys(bucket=bucket):
                client.delete_object(Bucket=bucket, Key=key)
            client.delete_bucket(Bucket=bucket)


@contextmanager
def moto_s3(conn_id: str = "batchcode_test_s3", *, check_credentials: bool = False) -> Iterator[S3Sandbox]:
    """:func:`s3_sandbox` on a new moto server: what pipeline tests use for Refinery's object storage."""
    with s3_sandbox(conn_id, check_credentials=check_credentials) as sandbox:
        yield sandbox
