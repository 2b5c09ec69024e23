"""The bundled demo: a tiny offline model and a synthetic data drop with planted duplicates."""
