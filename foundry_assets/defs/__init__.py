"""The Dagster layer: partitions, resources, one module per stage's assets, the sensor.

Importing it quiets known third-party noise for the run's process and the processes it starts (`console.py`), before
any step imports transformers, datasets or torch.
"""

import warnings

import dagster as dg

from foundry_assets.console import quiet_third_party

quiet_third_party()
# The exam check is a partitioned asset check (partitions_def on the check), which Dagster 1.13 marks as preview.
warnings.filterwarnings(
    "ignore", category=dg.PreviewWarning, message=".*partitions_def on an AssetCheckSpec.*"
)
# "Open source code" links on each asset (with_source_code_references) use a metadata class Dagster 1.13 marks beta.
warnings.filterwarnings(
    "ignore",
    category=dg.BetaWarning,
    message=".*(CodeReferencesMetadataValue|LocalFileCodeReference|with_source_code_references).*",
)
