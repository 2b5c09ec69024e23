"""One dynamic partition per training job, keyed by the manifest's `job_id`."""

import dagster as dg

job_partitions = dg.DynamicPartitionsDefinition(name="training_jobs")
