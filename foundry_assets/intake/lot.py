"""The lot number: streamed SHA256 of the dataset and of the canonical manifest, fixed before training."""

from dataclasses import asdict, dataclass
from pathlib import Path

from foundry_assets.errors import DataError
from foundry_assets.hashing import sha256_file, sha256_text
from foundry_assets.manifest import TrainingManifest


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
