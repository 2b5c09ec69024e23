"""The S3 registry against moto's live S3 HTTP server on 127.0.0.1, talked to only through boto3."""

import hashlib
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from foundry_assets.errors import PublishError
from foundry_assets.hashing import sha256_tree
from foundry_assets.publisher import PublishStepError, backend_for, push_artifact
from foundry_assets.publisher.base import HASH_MANIFEST, parse_hash_manifest
from foundry_assets.publisher.s3 import S3Registry
from foundry_assets_tests.publisher.conftest import ACCESS_KEY, SECRET_KEY, make_client, start_moto

MiB = 1024 * 1024


def _objects(client: Any, bucket: str, prefix: str = "") -> dict[str, dict[str, Any]]:
    """{key: HEAD response} of every object under `prefix`."""
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: client.head_object(Bucket=bucket, Key=o["Key"]) for o in listed}


def test_publish_uploads_verifies_and_removes_staging(
    s3_client: Any, bucket: str, staged: Callable[..., Path]
) -> None:
    staging = staged()
    expected = sha256_tree(staging)
    result = push_artifact(staging, "v1.0.0", registry=f"s3://{bucket}/prod/models", s3_client=s3_client)
    assert result.status == "published" and result.staging_removed and not staging.exists()
    assert result.uri == f"s3://{bucket}/prod/models/v1.0.0/"
    assert result.files == expected
    objects = _objects(s3_client, bucket)
    assert set(objects) == {f"prod/models/v1.0.0/{n}" for n in [*expected, HASH_MANIFEST]}
    for name, digest in expected.items():
        head = objects[f"prod/models/v1.0.0/{name}"]
        assert head["Metadata"]["sha256"] == digest
        body = s3_client.get_object(Bucket=bucket, Key=f"prod/models/v1.0.0/{name}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == digest and head["ContentLength"] == len(body)
    listing = s3_client.get_object(Bucket=bucket, Key=f"prod/models/v1.0.0/{HASH_MANIFEST}")["Body"].read()
    assert parse_hash_manifest(listing.decode()) == expected


def test_republish_is_a_noop_and_a_conflicting_tag_is_refused(
    s3_client: Any, bucket: str, staged: Callable[..., Path]
) -> None:
    registry = f"s3://{bucket}"
    first = push_artifact(staged(), "v1", registry=registry, s3_client=lambda: s3_client)  # a client factory
    assert first.uri == f"s3://{bucket}/v1/"
    again = push_artifact(staged(), "v1", registry=registry, s3_client=s3_client)
    assert again.status == "unchanged" and again.staging_removed and again.files == first.files
    other = staged(b"other weights")
    with pytest.raises(PublishStepError, match=r"already exists .* different content") as info:
        push_artifact(other, "v1", registry=registry, s3_client=s3_client)
    assert info.value.step == "compare" and other.exists()
    body = s3_client.get_object(Bucket=bucket, Key="v1/adapter_model.safetensors")["Body"].read()
    assert body == b"weights"


def test_large_file_goes_up_as_multipart(s3_client: Any, bucket: str, staged: Callable[..., Path]) -> None:
    staging = staged()
    (staging / "adapter_model.safetensors").write_bytes(os.urandom(6 * MiB + 123))
    registry = S3Registry(
        f"s3://{bucket}/mp", client=s3_client, multipart_threshold=MiB, multipart_chunksize=5 * MiB
    )
    result = push_artifact(staging, "v1", registry=registry)
    head = s3_client.head_object(Bucket=bucket, Key="mp/v1/adapter_model.safetensors")
    assert head["ETag"].strip('"').endswith("-2"), "two 5 MiB parts: a multipart upload"
    assert head["Metadata"]["sha256"] == result.files["adapter_model.safetensors"]
    small = s3_client.head_object(Bucket=bucket, Key="mp/v1/exam_report.json")
    assert "-" not in small["ETag"], "files under the threshold go up in one PUT"


@pytest.mark.faults  # a killed S3 server
def test_server_stopped_mid_upload_keeps_staging_and_a_retry_completes(
    aws_env: None, s3_client: Any, bucket: str, staged: Callable[..., Path]
) -> None:
    server = start_moto()
    port = server.get_host_and_port()[1]
    client = make_client(port)
    calls: list[str] = []

    def stop_after_first_object(**_: Any) -> None:
        calls.append("put")
        if len(calls) == 1:
            server.stop()

    client.meta.events.register("after-call.s3.PutObject", stop_after_first_object)
    staging = staged()
    expected = sha256_tree(staging)
    with pytest.raises(PublishStepError, match=r"upload of .*staging kept for a retry") as info:
        push_artifact(staging, "v1", registry=f"s3://{bucket}/crash", s3_client=client)
    assert info.value.step == "upload"
    assert sha256_tree(staging) == {**expected, HASH_MANIFEST: sha256_tree(staging)[HASH_MANIFEST]}
    half = _objects(s3_client, bucket, "crash/v1/")  # moto's store outlives the stopped server
    assert len(half) == 1 and f"crash/v1/{HASH_MANIFEST}" not in half, "half a tag, without its manifest"

    restarted = start_moto(port)  # the server comes back on the same address
    try:
        result = push_artifact(staging, "v1", registry=f"s3://{bucket}/crash", s3_client=client)
    finally:
        restarted.stop()
    assert result.status == "published" and not staging.exists()
    assert set(_objects(s3_client, bucket, "crash/v1/")) == {
        f"crash/v1/{n}" for n in [*expected, HASH_MANIFEST]
    }


def test_unfinished_tag_with_other_content_is_completed_not_refused(
    s3_client: Any, bucket: str, staged: Callable[..., Path]
) -> None:
    for key in ("v1/adapter_model.safetensors", "v1/stale.bin"):  # a crashed run of other content
        s3_client.put_object(Bucket=bucket, Key=key, Body=b"old", Metadata={"sha256": "0" * 64})
    result = push_artifact(staged(), "v1", registry=f"s3://{bucket}", s3_client=s3_client)
    assert result.status == "published"
    assert set(_objects(s3_client, bucket)) == {f"v1/{n}" for n in [*result.files, HASH_MANIFEST]}


def test_verification_reads_every_object_back(
    s3_client: Any, bucket: str, staged: Callable[..., Path]
) -> None:
    result = push_artifact(staged(), "v1", registry=f"s3://{bucket}", s3_client=s3_client)
    digest = result.files["exam_report.json"]  # corrupt one object behind the registry's back
    s3_client.put_object(Bucket=bucket, Key="v1/exam_report.json", Body=b"{}", Metadata={"sha256": digest})
    staging = staged()
    with pytest.raises(PublishStepError, match=r"exam_report.json") as info:
        push_artifact(staging, "v1", registry=f"s3://{bucket}", s3_client=s3_client)
    assert info.value.step == "verify" and staging.exists()


def test_missing_bucket_is_named(s3_client: Any, staged: Callable[..., Path]) -> None:
    staging = staged()
    with pytest.raises(PublishStepError, match="bucket 'no-such-bucket' does not exist") as info:
        push_artifact(staging, "v1", registry="s3://no-such-bucket/x", s3_client=s3_client)
    assert info.value.step == "compare" and staging.exists()


def test_credentials_never_reach_logs_results_or_errors(
    s3_client: Any, bucket: str, staged: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    result = push_artifact(staged(), "v1", registry=f"s3://{bucket}/p", s3_client=s3_client)
    closed = make_client(1)  # nothing listens on port 1: the failure path's message
    with pytest.raises(PublishStepError) as info:
        push_artifact(staged(name="again"), "v2", registry=f"s3://{bucket}/p", s3_client=closed)
    assert any(r.name.startswith("foundry_assets.publisher") for r in caplog.records)
    texts = [caplog.text, repr(result), str(result.to_metadata()), str(info.value)]
    assert not [t for t in texts if SECRET_KEY in t]
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("foundry_assets"))
    assert ACCESS_KEY not in ours and ACCESS_KEY not in repr(result) and ACCESS_KEY not in str(info.value)


def test_backend_for_builds_an_s3_registry_with_the_callers_client(s3_client: Any) -> None:
    backend = backend_for("s3://bucket-a/some/prefix/", s3_client=s3_client)
    assert isinstance(backend, S3Registry) and backend.client is s3_client
    assert (backend.bucket, backend.prefix, backend.tag_uri("v3")) == (
        "bucket-a",
        "some/prefix",
        "s3://bucket-a/some/prefix/v3/",
    )


@pytest.fixture()
def frozen_server() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel's backlog) and never answers: a frozen S3 server."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


@pytest.mark.faults
def test_a_frozen_server_fails_the_step_within_the_configured_timeouts(
    aws_env: None, frozen_server: int, staged: Callable[..., Path]
) -> None:
    """The publisher's S3 resource bounds every call (botocore's defaults held a publish ≈ 6 min): the step fails
    naming S3, the endpoint and the limit that ran out."""
    from foundry_assets.defs.resources import FoundryS3Resource, PublisherResource

    s3 = FoundryS3Resource(
        endpoint_url=f"http://127.0.0.1:{frozen_server}",
        connect_timeout_s=1,
        read_timeout_s=1,
        max_attempts=2,
    )
    staging = staged()
    with pytest.raises(PublishStepError) as info:
        PublisherResource(s3=s3).push(staging, "v1", registry="s3://models/prod")
    message = str(info.value)
    assert info.value.step == "compare" and staging.exists()
    assert f"S3 endpoint http://127.0.0.1:{frozen_server} did not answer for s3://models" in message
    assert "read timeout: connect_timeout 1 s, read_timeout 1 s, 2 attempt(s)" in message


def test_a_registry_uri_holding_a_credential_is_refused(s3_client: Any) -> None:
    with pytest.raises(PublishError, match="holds a credential") as info:
        backend_for(f"s3://{ACCESS_KEY}:{SECRET_KEY}@models/prod", s3_client=s3_client)
    assert SECRET_KEY not in str(info.value) and ACCESS_KEY not in str(info.value)
