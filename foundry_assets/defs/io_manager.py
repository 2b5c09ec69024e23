"""Where the assets' values are stored between steps: JSON documents of the stage results, never pickles.

Dagster's default `FilesystemIOManager` pickles every output under DAGSTER_HOME/storage and unpickles it in the next
step: anyone who can write there could run code in a run worker, or flip a stored `passed`. The stage results are
small frozen dataclasses of paths, hashes and numbers, so they are stored as JSON (`stages.to_document`) and built
back only as one of the six stage types (`stages.from_document`). The weights themselves never pass through here:
results name folders, and the publish re-hashes what it ships against the audit trail (`publisher.gate`).
"""

import json
from typing import Any

import dagster as dg
from upath import UPath

from foundry_assets.fsio import write_json
from foundry_assets.stages import from_document, to_document


class _StageResultStore(dg.UPathIOManager):
    """One JSON file per asset and partition: `<base>/<asset>/<job_id>.json`, written atomically."""

    extension = ".json"

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        write_json(str(path), to_document(obj), indent=1, sort_keys=True)

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        try:
            return from_document(json.loads(path.read_text(encoding="utf-8")))
        except ValueError as e:  # also a JSONDecodeError: a value no foundry wrote
            raise dg.Failure(
                description=f"stored value {path}: {e}; re-materialize the upstream asset for this partition",
                allow_retries=False,
            ) from e


class StageResultIOManager(dg.ConfigurableIOManagerFactory):
    """Stores each asset's stage result as JSON under `base_dir` (default: the instance's storage folder)."""

    base_dir: str | None = None

    def create_io_manager(self, context: dg.InitResourceContext) -> _StageResultStore:
        assert context.instance is not None
        return _StageResultStore(base_path=UPath(self.base_dir or context.instance.storage_directory()))
