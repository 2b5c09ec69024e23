"""The Prune stage's entry point: one job's raw data in, its curated splits out, every setting read from the manifest.

The `curated_dataset` asset calls `curate` with the embedder its resource built; a notebook or a script can call it the
same way without Dagster. `curate_drop` stays the lower-level call for one file and explicit settings (`foundry
curate`, the tests).
"""

from foundry_assets.curator.cache import Embedder
from foundry_assets.curator.pipeline import CurationResult, curate_drop
from foundry_assets.manifest import TrainingManifest
from foundry_assets.stages import RawData
from foundry_assets.workspace import Workspace


def curate(
    raw: RawData, manifest: TrainingManifest, workspace: Workspace, embedder: Embedder
) -> CurationResult:
    """Curate the job's drop into its curated folder, embeddings cached in the node's shared cache.

    Reads the manifest's curation section (threshold, keep policy, embedded fields, training decontamination), data section (test
    fraction, split seed) and exam section (the n of the n-gram overlap, the same n the exam gates on). The embedder
    already carries curation.embedding_model and curation.batch_size. `result.dataset(raw.lot_number)` is the
    stage's typed result."""
    curation, data = manifest.curation, manifest.data
    return curate_drop(
        raw.data_path,
        workspace.curated_dir(raw.job_id),
        data_format=raw.data_format,
        embedder=embedder,
        threshold=curation.similarity_threshold,
        keep=curation.keep,
        decontaminate_train=curation.decontaminate_train,
        test_fraction=data.test_fraction,
        split_seed=data.split_seed,
        ngram_n=manifest.exam.ngram_size,
        cache_dir=workspace.embedding_cache_dir(),
        embed_fields=curation.embed_fields,
    )
