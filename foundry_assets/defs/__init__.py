"""The Dagster layer: partitions, resources, one module of assets per stage, the exam check."""
