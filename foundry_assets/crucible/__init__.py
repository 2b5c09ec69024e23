"""The crucible: strategy registry, hardware pre-flight and the training loop."""
