"""The one `Definitions`: six partitioned assets, the blocking exam check, resources and the job."""

from typing import Any

from foundry_assets.crucible.train import ensure_unsloth_first

ensure_unsloth_first()  # Unsloth patches transformers/trl/peft only if it is imported before them.

import dagster as dg  # noqa: E402

from foundry_assets.defs.distribute import published_artifact  # noqa: E402
from foundry_assets.defs.examine import exam_report, exam_report_passes_gate  # noqa: E402
from foundry_assets.defs.merge import merged_model  # noqa: E402
from foundry_assets.defs.partitions import job_partitions  # noqa: E402
from foundry_assets.defs.prune import curated_dataset  # noqa: E402
from foundry_assets.defs.resources import (  # noqa: E402
    AuditTrailResource,
    EmbedderResource,
    PublisherResource,
    WorkspaceResource,
    s3_resource_from_env,
)
from foundry_assets.defs.select import raw_data  # noqa: E402
from foundry_assets.defs.sensors import drop_sensor  # noqa: E402
from foundry_assets.defs.train import trained_adapter  # noqa: E402

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
        "publisher": PublisherResource(s3=s3_resource_from_env()),
        # explicit, so a later run (or the UI) can load any partition's upstream values from DAGSTER_HOME
        "io_manager": dg.FilesystemIOManager(),
    }


def build_definitions(resources: dict[str, Any] | None = None) -> dg.Definitions:
    """The foundry's Definitions; `resources` defaults to `build_resources()`."""
    return dg.Definitions(
        assets=FOUNDRY_ASSETS,
        asset_checks=[exam_report_passes_gate],
        jobs=[foundry_job],
        sensors=[drop_sensor],
        resources=resources or build_resources(),
        executor=dg.in_process_executor,
    )


defs = build_definitions()
