"""Folders written whole: a finished folder takes the place of the old one by rename, never half-written.

Used wherever a stage publishes a folder (the crucible's adapter, the alchemist's merged model, an artifact fetched
from a registry): the new folder is built beside its target under a temporary name and renamed into place.
"""

import os
import shutil
import uuid
from pathlib import Path


def replace_dir(source: Path, dest: Path) -> None:
    """Rename `source` to `dest`; an existing `dest` is moved aside first, put back if the rename fails, and removed
    only once `source` is in place. Both must be on one file system (build `source` beside `dest`)."""
    old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
    if dest.exists():
        os.rename(dest, old)
    try:
        os.rename(source, dest)
    except OSError:
        if old.exists():
            os.rename(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)
