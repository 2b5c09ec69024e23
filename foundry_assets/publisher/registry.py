"""The registry of backends by URI scheme. It imports its members (local folder, S3, Git LFS) and registers them;
the members import only `base`, never this module."""

from typing import Any
from urllib.parse import urlparse

from foundry_assets.errors import PublishError
from foundry_assets.publisher.base import RegistryBackend
from foundry_assets.publisher.git_lfs import GitLfsRegistry
from foundry_assets.publisher.local import LocalRegistry
from foundry_assets.publisher.s3 import S3Registry

_BACKENDS: dict[str, type[RegistryBackend]] = {}


def register_backend(*, backend: type[RegistryBackend]) -> None:
    """Register a backend under each of its schemes; a scheme registered twice is an error."""
    for scheme in backend.schemes():
        if scheme != scheme.lower():
            raise ValueError(f"Registry scheme {scheme!r} must be lowercase.")
        if scheme in _BACKENDS:
            raise ValueError(f"A registry backend for {scheme!r} is already registered.")
    for scheme in backend.schemes():
        _BACKENDS[scheme] = backend


def registered_schemes() -> tuple[str, ...]:
    """The URI schemes some backend serves, sorted (a plain path means `file`)."""
    return tuple(sorted(_BACKENDS))


def backend_for(registry: str, *, s3_client: Any = None) -> RegistryBackend:
    """The backend for a registry URI: a plain path or file:// is local; others by scheme.

    `s3_client` (a boto3 S3 client, or a zero-argument callable returning one) is used by `s3://` registries only.
    """
    scheme = urlparse(registry).scheme.lower()
    scheme = "file" if len(scheme) <= 1 else scheme
    if scheme not in _BACKENDS:
        raise PublishError(
            f"No registry backend for {scheme!r} ({registry}); available: {', '.join(sorted(_BACKENDS))}."
        )
    return _BACKENDS[scheme].from_uri(registry, s3_client=s3_client)


for _backend in (LocalRegistry, S3Registry, GitLfsRegistry):
    register_backend(backend=_backend)
