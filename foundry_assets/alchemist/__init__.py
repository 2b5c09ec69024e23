"""The alchemist: merge LoRA/DoRA adapters into one model folder (DARE-TIES, or a PEFT fold for one adapter).

DARE-TIES is mergekit's `dare_ties` method run tensor by tensor on task vectors computed from the adapters
(`dare_ties.py`), so no folded copy of the base is ever written; the output is in the base checkpoint's dtype, and a
bitsandbytes 4-bit base is merged as its dequantized 16-bit weights (`checkpoint.py`).

A merge source may be another foundry job. What is known about that job is read from the foundry's own records,
with no Dagster involved: its registered manifest (base model), its hash-chained audit trail (the latest
`adapter_saved` record with the adapter's file hashes, the lot of the run that trained it, and the latest
`exam_verdict` after it) and the adapter folder itself, re-hashed. `resolve_job_sources` refuses a source that does not
exist, was trained on another base, is itself a merge job, has no exam, failed its latest exam, or whose adapter
changed since it was examined — all before any merge work.

`stage.merge_job` is the stage's entry point (the `merged_model` asset calls it): the job's own adapter and its
sources, checked, merged into the job's `merged/` folder, returned as a `MergedModel` with its provenance.
"""

from typing import Any

from foundry_assets.alchemist.refs import AdapterRef
from foundry_assets.alchemist.sources import JobSource, resolve_job_sources
from foundry_assets.alchemist.stage import MergeOutcome, MergeRefused, merge_job

# The merge itself needs torch: it is imported on first use, so loading the code location (which imports the Dagster
# layer, and through it this package) stays free of torch.
_MERGE_NAMES = ("TOKENIZER_FILES", "MergeResult", "dare_ties_config", "merge_adapters")


def __getattr__(name: str) -> Any:
    if name in _MERGE_NAMES:
        from foundry_assets.alchemist import merge

        return getattr(merge, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "TOKENIZER_FILES",
    "AdapterRef",
    "JobSource",
    "MergeOutcome",
    "MergeRefused",
    "MergeResult",
    "dare_ties_config",
    "merge_adapters",
    "merge_job",
    "resolve_job_sources",
]
