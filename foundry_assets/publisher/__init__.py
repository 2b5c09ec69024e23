"""Distribution: `push_artifact(path, version_tag)` to the registry a manifest names."""

from foundry_assets.publisher.base import PublishResult, RegistryBackend, backend_for, push_artifact

__all__ = ["PublishResult", "RegistryBackend", "backend_for", "push_artifact"]
