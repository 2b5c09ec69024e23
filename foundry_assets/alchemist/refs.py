"""What the two halves of the alchemist share, with no torch in it: an adapter to merge and the JSON reader."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry_assets.errors import MergeError


@dataclass(frozen=True)
class AdapterRef:
    """One adapter to merge: its folder, DARE-TIES weight and density, and a display name."""

    path: Path
    weight: float = 1.0
    density: float = 0.5
    name: str = ""

    @property
    def label(self) -> str:
        """The name, or the folder name when no name was given."""
        return self.name or Path(self.path).name


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from `path`; MergeError names `what` and the file otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MergeError(f"{what}: {path.name} is missing from {path.parent}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MergeError(f"{what}: {path} cannot be read: {e}") from None
    if not isinstance(data, dict):
        raise MergeError(f"{what}: {path} is not a JSON object")
    return data
