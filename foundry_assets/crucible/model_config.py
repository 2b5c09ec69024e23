"""A model folder's `config.json`, read for sizing a job: the JSON object, and the architecture numbers checked to be
whole, positive and within what any released decoder has. A malformed config is a short error naming the key and the
file, never a traceback (`int('wide')`, a division by zero heads) or a fit computed from `num_hidden_layers: -5`."""

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from foundry_assets.errors import HardwareIncompatibleError

MAX_DIM = 2**20
"""Largest width accepted (hidden, intermediate, vocabulary); released decoders stay far below (Llama-3.1-405B: hidden
16384, intermediate 53248; the widest vocabularies about 256k)."""
MAX_COUNT = 1024
"""Largest layer or head count accepted; released decoders have at most a few hundred."""


def read_model_config(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; anything else is a HardwareIncompatibleError naming the file."""
    import json

    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise HardwareIncompatibleError(
            f"{path} cannot be read as JSON ({str(e)[:200]}); fix or replace the model's config.json."
        ) from None
    if not isinstance(config, dict):
        raise HardwareIncompatibleError(
            f"{path} holds a JSON {type(config).__name__}, not an object of model settings; fix or replace "
            "the model's config.json."
        )
    return config


class ArchitectureFacts(BaseModel):
    """The config.json keys that size a decoder-only transformer (other keys are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    hidden_size: int = Field(ge=1, le=MAX_DIM)
    intermediate_size: int = Field(ge=1, le=MAX_DIM)
    num_hidden_layers: int = Field(ge=1, le=MAX_COUNT)
    num_attention_heads: int = Field(ge=1, le=MAX_COUNT)
    num_key_value_heads: int | None = Field(None, ge=1, le=MAX_COUNT)
    vocab_size: int = Field(ge=1, le=MAX_DIM)
    tie_word_embeddings: bool = False
    head_dim: int | None = Field(None, ge=1, le=MAX_DIM)

    @model_validator(mode="after")
    def _consistent(self) -> "ArchitectureFacts":
        if (self.num_key_value_heads or 0) > self.num_attention_heads:
            raise ValueError(
                f"num_key_value_heads {self.num_key_value_heads} exceeds num_attention_heads "
                f"{self.num_attention_heads} (grouped-query attention shares KV heads, never adds them)"
            )
        if self.head_dim is None and self.hidden_size < self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is under num_attention_heads {self.num_attention_heads}: no head "
                "dimension is left (set head_dim)"
            )
        return self


def architecture_facts(config: dict[str, Any], source: str) -> ArchitectureFacts:
    """The validated sizing keys of `config` (read from `source`), or one HardwareIncompatibleError naming each."""
    try:
        return ArchitectureFacts.model_validate(config)
    except ValidationError as e:
        problems = []
        for item in e.errors()[:5]:
            key = ".".join(str(p) for p in item["loc"])
            got = f" (got {repr(item['input'])[:40]})" if key and item["type"] != "missing" else ""
            problems.append(f"{key or 'settings'}: {item['msg'].removeprefix('Value error, ')}{got}")
        raise HardwareIncompatibleError(
            f"{source} cannot size the model: {'; '.join(problems)}. Fix config.json (or point model_path at the "
            "model's own folder)."
        ) from None
