"""Distribution: `publish_job(manifest, exam, merged, …)`, the stage's entry point (the foundry's publish rules), over
`push_artifact(path, version_tag, registry=…)` to the registry a manifest names, and the way back:
`fetch_artifact(registry, tag, dest, weights=True)` (the tag's weights, from its root or, in a tag published before
the root layout, its `adapter/`/`merged_model/` folder; every file checked against the tag's MANIFEST.sha256) and
`verify_artifact(registry, tag, files)` (a published tag re-read against the hashes recorded at publish time).

Registries by URI: a path or file:// (local folder), s3://bucket/prefix (pass `s3_client=`), and Git LFS remotes
git+file://, git+ssh://, git+https:// (optionally `#branch`). See each backend's module for its settings.
"""

from foundry_assets.publisher.base import (
    HASH_MANIFEST,
    FetchStepError,
    PublishResult,
    PublishStepError,
    RegistryBackend,
)
from foundry_assets.publisher.card import build_model_card, write_model_card
from foundry_assets.publisher.fetch import FetchResult, fetch_artifact, verify_artifact
from foundry_assets.publisher.layout import stage_artifact
from foundry_assets.publisher.push import push_artifact
from foundry_assets.publisher.registry import backend_for, registered_schemes
from foundry_assets.publisher.stage import (
    PublishJobError,
    PublishJobResult,
    Registry,
    announce,
    publish_job,
)
from foundry_assets.publisher.webhook import (
    DeliveryError,
    DeliveryResult,
    deployment_payload,
    notify_deployment,
)

__all__ = [
    "HASH_MANIFEST",
    "DeliveryError",
    "DeliveryResult",
    "FetchResult",
    "FetchStepError",
    "PublishJobError",
    "PublishJobResult",
    "PublishResult",
    "PublishStepError",
    "Registry",
    "RegistryBackend",
    "announce",
    "backend_for",
    "build_model_card",
    "deployment_payload",
    "fetch_artifact",
    "notify_deployment",
    "publish_job",
    "push_artifact",
    "registered_schemes",
    "stage_artifact",
    "verify_artifact",
    "write_model_card",
]
