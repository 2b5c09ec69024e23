"""The lot number: streamed SHA256 of the dataset and of the canonical manifest, fixed before training."""

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

from foundry_assets.errors import DataError
from foundry_assets.manifest import TrainingManifest

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """SHA256 of a file, read in 1 MiB chunks so any size fits in constant memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_tree(root: str | Path) -> dict[str, str]:
    """SHA256 of every regular file under `root`, keyed by its POSIX path relative to `root`, sorted."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def tree_digest(hashes: dict[str, str]) -> str:
    """One SHA256 over a tree's `path  hash` lines (the format of sha256sum), e.g. for a folder's identity."""
    return sha256_text("".join(f"{h}  {name}\n" for name, h in sorted(hashes.items())))


@dataclass(frozen=True)
class LotNumber:
    """Identity of one training job's inputs: the data bytes and the manifest as validated."""

    dataset_sha256: str
    manifest_sha256: str
    lot_number: str

    def to_metadata(self) -> dict[str, str]:
        return asdict(self)


def compute_lot(data_path: str | Path, manifest: TrainingManifest) -> LotNumber:
    """Hash the dataset file and the canonical manifest; the lot number is the SHA256 of both hashes."""
    path = Path(data_path)
    if not path.is_file():
        raise DataError(
            f"data.path {str(path)!r} is not a file; point the manifest's data.path at the JSONL drop."
        )
    dataset = sha256_file(path)
    manifest_hash = sha256_text(manifest.canonical_json())
    return LotNumber(dataset, manifest_hash, sha256_text(f"{dataset}:{manifest_hash}"))
