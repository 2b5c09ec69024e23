"""The crucible: strategy registry, hardware pre-flight and the training loop.

No Dagster here: `train_job` (the Train stage's entry point, `job.py`) is called by the `trained_adapter` asset and
can be called from a CLI or a notebook alike; `train.train_adapter` is the training run itself."""

from foundry_assets.crucible.stage import TrainingRun, TrainJobResult, train_job

__all__ = ["TrainJobResult", "TrainingRun", "train_job"]
