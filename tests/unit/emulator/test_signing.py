"""Presigned storage URLs: their shape, and every way verification refuses them."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import pytest

from airflow_batchcode.emulator import signing
from airflow_batchcode.emulator.signing import SignatureError, Signer

NOW = 1_750_000_000.0  # 2025-06-15T15:06:40Z
PATH = "/_storage/abs-coder-input/op/input.jsonl"
KMS = {
    "x-amz-server-side-encryption": "aws:kms",
    "x-amz-server-side-encryption-aws-kms-key-id": "arn:aws:kms:ap-southeast-2:123456789012:key/k1",
}


def split(url: str) -> tuple[str, dict[str, str]]:
    path, _, query = url.partition("?")
    return path, dict(parse_qsl(query, keep_blank_values=True))


def refused(signer: Signer, method: str, url: str, headers: dict[str, str], now: float) -> SignatureError:
    path, query = split(url)
    with pytest.raises(SignatureError) as caught:
        signer.verify(method, path, query, headers, now)
    return caught.value


def test_v4_url_has_the_s3_query_parameters() -> None:
    signer = Signer(access_key_id="AKIATESTTESTTESTTEST")
    path, query = split(signer.presign("PUT", PATH, ttl=3600, now=NOW, signed_headers=KMS))
    assert path == PATH
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Credential"] == "AKIATESTTESTTESTTEST/20250615/ap-southeast-2/s3/aws4_request"
    assert query["X-Amz-Date"] == "20250615T150640Z"
    assert query["X-Amz-Expires"] == "3600"
    assert query["X-Amz-SignedHeaders"] == (
        "host;x-amz-server-side-encryption;x-amz-server-side-encryption-aws-kms-key-id"
    )
    assert len(query["X-Amz-Signature"]) == 64
    int(query["X-Amz-Signature"], 16)


def test_download_urls_sign_only_the_host() -> None:
    _, query = split(Signer().presign("GET", PATH, ttl=60, now=NOW))
    assert query["X-Amz-SignedHeaders"] == "host"


def test_random_access_key_looks_like_aws() -> None:
    key = Signer().access_key_id
    assert key.startswith("AKIA") and len(key) == 20 and key.isalnum() and key.isupper()


@pytest.mark.parametrize("style", ["v4", "v2"])
def test_genuine_urls_verify_until_they_expire(style: signing.Style) -> None:
    signer = Signer()
    url = signer.presign("PUT", PATH, ttl=100, now=NOW, signed_headers=KMS, style=style)
    path, query = split(url)
    signer.verify("PUT", path, query, {**KMS, "Host": "example", "Content-Length": "5"}, NOW + 100)
    error = refused(signer, "PUT", url, KMS, NOW + 101)
    assert (error.code, error.message, error.status) == ("AccessDenied", "Request has expired", 403)


def test_header_names_are_case_insensitive() -> None:
    signer = Signer()
    path, query = split(signer.presign("PUT", PATH, ttl=60, now=NOW, signed_headers=KMS))
    signer.verify("PUT", path, query, {k.upper(): v for k, v in KMS.items()}, NOW)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda q: {**q, "X-Amz-Signature": "0" * 64},
        lambda q: {**q, "X-Amz-Expires": "604800"},
        lambda q: {**q, "X-Amz-Date": "20250615T160000Z"},
        lambda q: {k: v for k, v in q.items() if k != "X-Amz-Signature"},
        lambda q: {**q, "X-Amz-Credential": q["X-Amz-Credential"].replace("AKIA", "AKIB")},
        lambda q: {**q, "X-Amz-Algorithm": "AWS4-HMAC-SHA1"},
    ],
    ids=["signature", "expires", "date", "no-signature", "credential", "algorithm"],
)
def test_tampered_v4_query_does_not_match(tamper: object) -> None:
    signer = Signer()
    _, query = split(signer.presign("GET", PATH, ttl=60, now=NOW))
    url = f"{PATH}?{urlencode(tamper(query))}"  # type: ignore[operator]
    assert refused(signer, "GET", url, {}, NOW).code == "SignatureDoesNotMatch"


def test_other_path_method_or_secret_does_not_match() -> None:
    signer = Signer()
    url = signer.presign("GET", PATH, ttl=60, now=NOW)
    _, query = split(url)
    with pytest.raises(SignatureError, match="SignatureDoesNotMatch"):
        signer.verify("GET", PATH.replace("input", "output"), query, {}, NOW)
    with pytest.raises(SignatureError, match="SignatureDoesNotMatch"):
        signer.verify("PUT", PATH, query, {}, NOW)
    with pytest.raises(SignatureError, match="SignatureDoesNotMatch"):
        Signer().verify("GET", PATH, query, {}, NOW)


def test_signed_header_values_are_bound() -> None:
    signer = Signer()
    url = signer.presign("PUT", PATH, ttl=60, now=NOW, signed_headers=KMS)
    other_key = {**KMS, "x-amz-server-side-encryption-aws-kms-key-id": "arn:other"}
    assert refused(signer, "PUT", url, other_key, NOW).code == "SignatureDoesNotMatch"


def test_missing_signed_header_is_an_invalid_argument() -> None:
    signer = Signer()
    url = signer.presign("PUT", PATH, ttl=60, now=NOW, signed_headers=KMS)
    error = refused(signer, "PUT", url, {"x-amz-server-side-encryption": "aws:kms"}, NOW)
    assert error.code == "InvalidArgument" and error.status == 400
    assert "x-amz-server-side-encryption-aws-kms-key-id" in error.message


def test_out_of_range_expiry_is_refused() -> None:
    signer = Signer()
    url = signer.presign("GET", PATH, ttl=8 * 24 * 3600, now=NOW)
    error = refused(signer, "GET", url, {}, NOW)
    assert error.status == 400


def test_v2_url_shape_and_tampering() -> None:
    signer = Signer(access_key_id="AKIATESTTESTTESTTEST")
    url = signer.presign("GET", PATH, ttl=60, now=NOW, style="v2")
    path, query = split(url)
    assert set(query) == {"AWSAccessKeyId", "Expires", "Signature"}
    assert query["Expires"] == str(int(NOW) + 60) and query["AWSAccessKeyId"] == "AKIATESTTESTTESTTEST"
    for bad in (
        {**query, "Expires": str(int(NOW) + 6000)},
        {**query, "Signature": "AAAA"},
        {**query, "AWSAccessKeyId": "AKIAOTHER"},
        {**query, "Expires": "soon"},
    ):
        with pytest.raises(SignatureError) as caught:
            signer.verify("GET", path, bad, {}, NOW)
        assert caught.value.code == "SignatureDoesNotMatch"


def test_v2_signs_the_amz_headers_sent() -> None:
    signer = Signer()
    url = signer.presign("PUT", PATH, ttl=60, now=NOW, signed_headers=KMS, style="v2")
    path, query = split(url)
    signer.verify("PUT", path, query, KMS, NOW)
    with pytest.raises(SignatureError, match="SignatureDoesNotMatch"):
        signer.verify("PUT", path, query, {}, NOW)


def test_module_level_functions_share_one_process_signer() -> None:
    url = signing.presign("GET", PATH, ttl=60, now=NOW)
    path, query = split(url)
    signing.verify("GET", path, query, {}, NOW)
    with pytest.raises(SignatureError):
        signing.verify("GET", path, query, {}, NOW + 61)


def test_errors_never_contain_the_signature_or_url() -> None:
    signer = Signer()
    url = signer.presign("GET", PATH, ttl=60, now=NOW)
    _, query = split(url)
    for now, q in ((NOW, {**query, "X-Amz-Signature": "f" * 64}), (NOW + 999, query)):
        with pytest.raises(SignatureError) as caught:
            signer.verify("GET", PATH, q, {}, now)
        text = str(caught.value) + caught.value.message
        assert query["X-Amz-Signature"] not in text and "f" * 64 not in text and PATH not in text
