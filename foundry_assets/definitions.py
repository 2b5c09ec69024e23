"""The one `Definitions`: six partitioned assets, the blocking exam check, resources and the job.

Unsloth is not imported here: training runs in its own process (`crucible/isolation.py`), which imports Unsloth before
transformers; this process (the code location, the run worker, merge and exam) keeps transformers unpatched.
"""

from typing import Any

import dagster as dg

from foundry_assets.defs.alchemist import merged_model
from foundry_assets.defs.audit import published_artifact_audit_consistent
from foundry_assets.defs.crucible import trained_adapter
from foundry_assets.defs.curator import curated_dataset
from foundry_assets.defs.examiner import exam_report, exam_report_passes_gate
from foundry_assets.defs.executor import build_executor, gpu_lock_dir, io_dir
from foundry_assets.defs.intake import raw_data
from foundry_assets.defs.io_manager import StageResultIOManager
from foundry_assets.defs.partitions import job_partitions
from foundry_assets.defs.publisher import published_artifact
from foundry_assets.defs.release import release_sensor
from foundry_assets.defs.resources import (
    AuditTrailResource,
    EmbedderResource,
    GpuResource,
    WorkspaceResource,
    publisher_resource_from_env,
)
from foundry_assets.defs.sensors import drop_sensor
from foundry_assets.workspace import default_root

FOUNDRY_ASSETS = [raw_data, curated_dataset, trained_adapter, merged_model, exam_report, published_artifact]

foundry_job = dg.define_asset_job(
    "foundry_job",
    selection=dg.AssetSelection.assets(*FOUNDRY_ASSETS),
    partitions_def=job_partitions,
    description="Select → Prune → Train → Merge → Examine → Distribute for one training job (partition = job_id).",
)


def build_resources() -> dict[str, Any]:
    """Default resources; tests swap in instances pointed at temporary folders."""
    return {
        "workspace": WorkspaceResource(),
        "audit_trail": AuditTrailResource(),
        "embedder": EmbedderResource(),
        "gpu": GpuResource(lock_dir=gpu_lock_dir()),
        "publisher": publisher_resource_from_env(),
        # explicit, so a later run (or the UI) can load any partition's upstream values from DAGSTER_HOME
        "io_manager": StageResultIOManager(base_dir=io_dir(default_root())),
    }


def build_definitions(resources: dict[str, Any] | None = None) -> dg.Definitions:
    """The foundry's Definitions; `resources` defaults to `build_resources()`."""
    return dg.Definitions(
        assets=dg.with_source_code_references(FOUNDRY_ASSETS),  # "Open source code" in the UI
        asset_checks=[exam_report_passes_gate, published_artifact_audit_consistent],
        jobs=[foundry_job],
        sensors=[drop_sensor, release_sensor],
        resources=resources or build_resources(),
        executor=build_executor(),
    )


defs = build_definitions()
