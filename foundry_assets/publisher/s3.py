"""S3 registry (`s3://bucket/prefix`): a tag is the prefix `prefix/tag/`, complete once its MANIFEST.sha256 exists.

The caller passes the boto3 S3 client (or a zero-argument factory such as dagster-aws's `S3Resource.get_client`), so
endpoint, region and credentials are configured — and kept — outside this module; nothing here reads or logs them.
`s3_client()` builds one whose calls are bounded (connect and read timeouts, a few retries), so a frozen server fails
the step within about a minute (3 attempts of 20 s) instead of hanging it for several; the foundry's S3 resource uses it.

Upload order makes the tag complete-or-not: the files first (each with its SHA256 in the object metadata `sha256`
and as S3's own `ChecksumSHA256`, so the server rejects a corrupted body), `MANIFEST.sha256` last and only if absent
(`If-None-Match: *`). A prefix without the manifest is an unfinished upload: a retry re-uses the objects that already
match, replaces the rest and deletes strays, then writes the manifest.
"""

import base64
import functools
import hashlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import urlparse

from foundry_assets.errors import PublishError
from foundry_assets.publisher.base import HASH_MANIFEST, RegistryBackend, parse_hash_manifest
from foundry_assets.redact import redact

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
_CHUNK = 1 << 20
MULTIPART_THRESHOLD = 64 * 1024 * 1024
"""Files at least this large go up as a multipart upload (boto3's managed transfer)."""
MULTIPART_CHUNKSIZE = 16 * 1024 * 1024
"""Part size of a multipart upload (S3 needs at least 5 MiB per part but the last)."""


S3_CONNECT_TIMEOUT_S = 10.0
"""Seconds to wait for a TCP connection to the S3 endpoint (botocore's default is 60)."""
S3_READ_TIMEOUT_S = 20.0
"""Seconds a socket may wait for the server (an answer, or room to send a part); a server that accepts the connection
and then freezes fails an attempt after this. S3 answers a 16 MiB part within a second or two of receiving it."""
S3_MAX_ATTEMPTS = 3
"""Attempts per S3 call, retried in botocore's `standard` mode (with backoff, on timeouts, throttling and 5xx)."""


def s3_client(
    *,
    connect_timeout_s: float = S3_CONNECT_TIMEOUT_S,
    read_timeout_s: float = S3_READ_TIMEOUT_S,
    max_attempts: int = S3_MAX_ATTEMPTS,
    profile_name: str | None = None,
    unsigned: bool = False,
    **options: Any,
) -> Any:
    """A boto3 S3 client whose every call is bounded: botocore's defaults (60 s to connect, 60 s per read, up to 5
    legacy-mode attempts, each retried again inside a multipart transfer) let a frozen server hold a publish for
    minutes. `options` are `boto3.client`'s (endpoint_url, region_name, credentials, verify, use_ssl)."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    config = Config(
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={
            "total_max_attempts": max_attempts,
            "mode": "standard",
        },  # `max_attempts` would count retries
        **({"signature_version": UNSIGNED} if unsigned else {}),
    )
    return boto3.session.Session(profile_name=profile_name).client("s3", config=config, **options)


def _timeouts_named(
    method: Callable[Concatenate["S3Registry", P], R],
) -> Callable[Concatenate["S3Registry", P], R]:
    """Turn botocore's timeout errors in `method` into a `PublishError` naming S3, the endpoint and the limits."""

    @functools.wraps(method)
    def wrapper(self: "S3Registry", *args: P.args, **kwargs: P.kwargs) -> R:
        from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

        try:
            return method(self, *args, **kwargs)
        except (ConnectTimeoutError, ReadTimeoutError) as e:
            raise self.timeout_error(e) from e

    return wrapper


def _error_code(error: Exception) -> str:
    """The S3 error code of a botocore ClientError ('' for any other exception)."""
    response = getattr(error, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


class S3Registry(RegistryBackend):
    """Registry in an S3 (or S3-compatible) bucket, reached through a caller-supplied boto3 client."""

    def __init__(
        self,
        uri: str,
        *,
        client: Any = None,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        multipart_chunksize: int = MULTIPART_CHUNKSIZE,
    ) -> None:
        super().__init__(uri)
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise PublishError(f"S3 registry {uri!r} is not of the form s3://BUCKET[/PREFIX].")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self._client_or_factory = client
        self._client: Any = None
        self.multipart_threshold = multipart_threshold
        self.multipart_chunksize = multipart_chunksize

    @classmethod
    def scheme(cls) -> str:
        """The S3 URI scheme."""
        return "s3"

    @classmethod
    def from_uri(cls, uri: str, *, s3_client: Any = None) -> "S3Registry":
        """Build the registry with the caller's client (or factory); None means `boto3.client("s3")` from env."""
        return cls(uri, client=s3_client)

    @property
    def client(self) -> Any:
        """The boto3 S3 client, created on first use from the factory (or `s3_client()` from the environment)."""
        if self._client is None:
            source = self._client_or_factory
            if source is None:
                self._client = s3_client()
            else:
                self._client = source() if callable(source) else source
        return self._client

    def timeout_error(self, error: Exception) -> PublishError:
        """What an operator reads when the endpoint did not answer: which limit, its value, and what to do."""
        config = self.client.meta.config
        attempts = (config.retries or {}).get("total_max_attempts", "?")
        which = "connect" if "connect" in type(error).__name__.lower() else "read"
        return PublishError(
            f"the S3 endpoint {redact(self.client.meta.endpoint_url)} did not answer for s3://{self.bucket} "
            f"({which} timeout: connect_timeout {config.connect_timeout:g} s, read_timeout {config.read_timeout:g} s, "
            f"{attempts} attempt(s)); check that the endpoint is up (FOUNDRY_S3_ENDPOINT_URL), or raise the S3 "
            "resource's connect_timeout_s/read_timeout_s for a slow one"
        )

    def key(self, tag: str, name: str = "") -> str:
        """The object key of `name` inside the tag (the tag's prefix, ending in '/', when `name` is empty)."""
        return "/".join(part for part in (self.prefix, tag) if part) + "/" + name

    def tag_uri(self, tag: str) -> str:
        """`s3://bucket/prefix/tag/`."""
        return f"s3://{self.bucket}/{self.key(tag)}"

    def _objects(self, tag: str) -> Iterator[dict[str, Any]]:
        """Every object under the tag's prefix (paginated listing)."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(tag)):
            yield from page.get("Contents", [])

    def _head(self, key: str) -> dict[str, Any] | None:
        """The object's HEAD response, or None when it does not exist."""
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=key))
        except Exception as e:
            if _error_code(e) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    @_timeouts_named
    def existing_hashes(self, tag: str) -> dict[str, str] | None:
        """The tag's MANIFEST.sha256; None when absent, so an unfinished upload is completed, not refused."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(tag, HASH_MANIFEST))["Body"]
        except Exception as e:
            if _error_code(e) == "NoSuchBucket":
                raise PublishError(
                    f"bucket {self.bucket!r} does not exist; create it or fix the registry URI."
                ) from e
            if _error_code(e) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return parse_hash_manifest(body.read().decode("utf-8"))

    @_timeouts_named
    def upload(self, staging: Path, tag: str, files: dict[str, str]) -> None:
        """Upload every file (skipping objects that already match), delete strays, then write the manifest."""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(
            multipart_threshold=self.multipart_threshold, multipart_chunksize=self.multipart_chunksize
        )
        for name, digest in sorted(files.items()):
            key, local = self.key(tag, name), staging / name
            head = self._head(key)
            if (
                head
                and head.get("Metadata", {}).get("sha256") == digest
                and head["ContentLength"] == local.stat().st_size
            ):
                log.info(
                    "s3://%s/%s already holds this file; kept from an earlier attempt.", self.bucket, key
                )
                continue
            extra = {"Metadata": {"sha256": digest}, "ChecksumAlgorithm": "SHA256"}
            self.client.upload_file(str(local), self.bucket, key, ExtraArgs=extra, Config=config)
            log.debug("Uploaded s3://%s/%s", self.bucket, key)
        wanted = {self.key(tag, name) for name in files}
        strays = [o["Key"] for o in self._objects(tag) if o["Key"] not in wanted]
        for key in strays:  # left by an earlier, unfinished attempt with other content
            log.info("Deleting s3://%s/%s left by an unfinished upload.", self.bucket, key)
            self.client.delete_object(Bucket=self.bucket, Key=key)
        listing = (staging / HASH_MANIFEST).read_bytes()
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.key(tag, HASH_MANIFEST),
                Body=listing,
                Metadata={"sha256": hashlib.sha256(listing).hexdigest()},
                ChecksumSHA256=base64.b64encode(hashlib.sha256(listing).digest()).decode("ascii"),
                IfNoneMatch="*",
            )
        except Exception as e:
            if _error_code(e) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise PublishError(
                    f"another publisher completed {self.tag_uri(tag)} meanwhile; run the publish again to compare."
                ) from e
            raise

    def _read_back(self, key: str, expected_size: int) -> str:
        """Stream the object and return its SHA256, checking its size and its `sha256` metadata on the way."""
        response = self.client.get_object(Bucket=self.bucket, Key=key)
        digest, size = hashlib.sha256(), 0
        for chunk in response["Body"].iter_chunks(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        sha = digest.hexdigest()
        problems = []
        if size != expected_size or size != response["ContentLength"]:
            problems.append(f"read {size} bytes, listed {expected_size}, header {response['ContentLength']}")
        stored = response.get("Metadata", {}).get("sha256")
        if stored != sha:
            problems.append(f"metadata sha256 {stored} but content hashes to {sha}")
        if problems:
            raise PublishError(
                f"s3://{self.bucket}/{key}: "
                + "; ".join(problems)
                + " (the registry copy is damaged: delete the "
                "tag's prefix, then publish again)"
            )
        return sha

    @_timeouts_named
    def download(self, tag: str, files: dict[str, str], dest: Path) -> None:
        """Stream each listed object to `dest`, hashing it on the way; a body that does not match fails naming it."""
        for name, expected in sorted(files.items()):
            key, target = self.key(tag, name), dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key)
            except Exception as e:
                if _error_code(e) in ("404", "NoSuchKey", "NotFound"):
                    raise PublishError(
                        f"s3://{self.bucket}/{key} is listed in the tag's {HASH_MANIFEST} but missing"
                    ) from e
                raise
            digest = hashlib.sha256()
            with open(target, "wb") as handle:
                for chunk in response["Body"].iter_chunks(_CHUNK):
                    digest.update(chunk)
                    handle.write(chunk)
            if digest.hexdigest() != expected:
                raise PublishError(
                    f"s3://{self.bucket}/{key} hashes to {digest.hexdigest()}, not the {expected} its tag lists "
                    "(the registry copy is damaged: publish the tag again from its source)"
                )
            log.debug("Downloaded and verified s3://%s/%s", self.bucket, key)

    @_timeouts_named
    def remote_hashes(self, tag: str) -> dict[str, str]:
        """Read every object of the tag back (streamed) and return {relative path: SHA256 of its bytes}."""
        prefix = self.key(tag)
        return {o["Key"][len(prefix) :]: self._read_back(o["Key"], o["Size"]) for o in self._objects(tag)}
