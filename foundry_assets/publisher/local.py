"""The embedded registry: a local folder (a path or a file:// URI); a tag is a sub-folder, made visible atomically."""

import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

from foundry_assets.errors import PublishError
from foundry_assets.fsio import build_dir
from foundry_assets.hashing import sha256_tree
from foundry_assets.publisher.base import (
    HASH_MANIFEST,
    RegistryBackend,
    parse_hash_manifest,
    set_published_modes,
    short_error,
)


class LocalRegistry(RegistryBackend):
    """Registry in a local or mounted folder."""

    @classmethod
    def scheme(cls) -> str:
        """A local path or file:// URI."""
        return "file"

    @property
    def root(self) -> Path:
        """The registry folder."""
        parsed = urlparse(self.uri)
        return Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(self.uri)

    def tag_uri(self, tag: str) -> str:
        """file:// URI of the tag's folder."""
        return (self.root / tag).resolve().as_uri()

    def existing_hashes(self, tag: str) -> dict[str, str] | None:
        """The tag's listing; {} for a folder without one (tags appear by atomic rename, so it is foreign)."""
        listing = self.root / tag / HASH_MANIFEST
        if not (self.root / tag).exists():
            return None
        if not listing.exists():
            return {}  # a tag folder with no listing is never "the same content"
        return parse_hash_manifest(listing.read_text(encoding="utf-8"))

    def upload(self, staging: Path, tag: str, files: dict[str, str]) -> None:
        """Copy the listed files and the hash manifest to a hidden partial folder, then rename it to the tag.

        File by file, so that the first failure (a full disk) stops the copy and is reported as one short line
        naming the file (copytree would go on and report every file in a list); the partial folder is removed.
        The tag's files are 0644 and its folders 0755 (`set_published_modes`) before it appears.
        """

        def copy(tmp: Path) -> None:
            for name in sorted([*files, HASH_MANIFEST]):
                try:
                    (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(staging / name, tmp / name)
                except OSError as e:
                    raise PublishError(
                        f"copying {name!r} into the registry {self.root} failed: {short_error(e)}; the partial "
                        f"copy was removed and no tag {tag!r} was made (free space, then publish again)"
                    ) from e
            set_published_modes(tmp)

        # renamed into place whole; the rename fails if the tag appeared meanwhile
        build_dir(self.root / tag, copy, replace=False)

    def remote_hashes(self, tag: str) -> dict[str, str]:
        """Hash the tag folder's files."""
        return sha256_tree(self.root / tag)

    def download(self, tag: str, files: dict[str, str], dest: Path) -> None:
        """Copy the listed files out of the tag folder (a listed file that is gone is an error naming it)."""
        for name in sorted(files):
            source, target = self.root / tag / name, dest / name
            if not source.is_file():
                raise FileNotFoundError(
                    f"{name!r} is listed in the tag's {HASH_MANIFEST} but missing from {source.parent}"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
