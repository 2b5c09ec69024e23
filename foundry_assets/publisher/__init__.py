"""Distribution: `push_artifact(path, version_tag, registry=…)` to the registry a manifest names.

Registries by URI: a path or file:// (local folder), s3://bucket/prefix (pass `s3_client=`), and Git LFS remotes
git+file://, git+ssh://, git+https:// (optionally `#branch`). See each backend's module for its settings.
"""

from foundry_assets.publisher.base import (
    HASH_MANIFEST,
    PublishResult,
    PublishStepError,
    RegistryBackend,
    backend_for,
    push_artifact,
    registered_schemes,
)
from foundry_assets.publisher.layout import stage_artifact, write_model_card
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
    "PublishResult",
    "PublishStepError",
    "RegistryBackend",
    "backend_for",
    "deployment_payload",
    "notify_deployment",
    "push_artifact",
    "registered_schemes",
    "stage_artifact",
    "write_model_card",
]
