"""coreason-model-foundry: Select → Prune → Train → Merge → Examine → Distribute as Dagster assets."""

__version__ = "0.1.0"
