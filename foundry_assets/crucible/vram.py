"""Peak-VRAM estimate of a training job from the model's architecture alone (no weights are loaded).

The estimate adds weights (16-bit, or NF4 for the linear layers of a 4-bit base), the adapter with its gradients and
AdamW state, activations kept for the backward pass (all of them, or one checkpoint per layer with gradient
checkpointing), and the logits. Preference methods (ORPO) run chosen and rejected through the model, so twice the
sequences. The activation coefficients were calibrated against peak allocated memory measured on an H100 with
Unsloth (the table is in README.md; `benchmarks/gpu_calibrate.py` re-measures it).

Architectures come from a local `config.json` or, for air-gapped planning, from facts shipped here for the common
public bases; an unknown name with no local config is an error, never a guess.
"""

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from foundry_assets.crucible.strategies import get_strategy
from foundry_assets.errors import HardwareIncompatibleError

GIB = 1024**3


@dataclass(frozen=True)
class Architecture:
    """The few numbers of a decoder-only transformer that decide its memory."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    tie_word_embeddings: bool = False
    head_dim: int | None = None

    @property
    def kv_dim(self) -> int:
        return (self.head_dim or self.hidden_size // self.num_heads) * self.num_kv_heads

    @property
    def q_dim(self) -> int:
        return (self.head_dim or self.hidden_size // self.num_heads) * self.num_heads

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of the seven adapted projections of one layer: q, k, v, o, gate, up, down."""
        h, i = self.hidden_size, self.intermediate_size
        return [(h, self.q_dim), (h, self.kv_dim), (h, self.kv_dim), (self.q_dim, h), (h, i), (h, i), (i, h)]

    def linear_params(self) -> int:
        return self.num_layers * sum(a * b for a, b in self.linear_shapes())

    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Architecture":
        try:
            return cls(
                hidden_size=int(config["hidden_size"]),
                intermediate_size=int(config["intermediate_size"]),
                num_layers=int(config["num_hidden_layers"]),
                num_heads=int(config["num_attention_heads"]),
                num_kv_heads=int(config.get("num_key_value_heads") or config["num_attention_heads"]),
                vocab_size=int(config["vocab_size"]),
                tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
                head_dim=int(config["head_dim"]) if config.get("head_dim") else None,
            )
        except KeyError as e:
            raise HardwareIncompatibleError(
                f"config.json lacks {e.args[0]!r}; cannot size the model."
            ) from None


# Published configs of the bases Unsloth ships (hidden, intermediate, layers, heads, kv heads, vocab, tied).
KNOWN_ARCHITECTURES: dict[str, Architecture] = {
    "llama-3-8b": Architecture(4096, 14336, 32, 32, 8, 128256),
    "llama-3-70b": Architecture(8192, 28672, 80, 64, 8, 128256),
    "llama-3.1-8b": Architecture(4096, 14336, 32, 32, 8, 128256),
    "llama-3.1-70b": Architecture(8192, 28672, 80, 64, 8, 128256),
    "llama-3.2-1b": Architecture(2048, 8192, 16, 32, 8, 128256, tie_word_embeddings=True),
    "llama-3.2-3b": Architecture(3072, 8192, 28, 24, 8, 128256, tie_word_embeddings=True),
    "mistral-7b-v0.1": Architecture(4096, 14336, 32, 32, 8, 32000),
    "mistral-7b-v0.2": Architecture(4096, 14336, 32, 32, 8, 32000),
    "mistral-7b-v0.3": Architecture(4096, 14336, 32, 32, 8, 32768),
    "qwen2.5-0.5b": Architecture(896, 4864, 24, 14, 2, 151936, tie_word_embeddings=True),
    "qwen2.5-1.5b": Architecture(1536, 8960, 28, 12, 2, 151936, tie_word_embeddings=True),
    "qwen2.5-3b": Architecture(2048, 11008, 36, 16, 2, 151936, tie_word_embeddings=True),
    "qwen2.5-7b": Architecture(3584, 18944, 28, 28, 4, 152064),
    "qwen2.5-14b": Architecture(5120, 13824, 48, 40, 8, 152064),
    "qwen2.5-32b": Architecture(5120, 27648, 64, 40, 8, 152064),
    "qwen2.5-72b": Architecture(8192, 29568, 80, 64, 8, 152064),
}
_SUFFIXES = re.compile(r"(-(bnb-4bit|unsloth|instruct|it|chat|base|hf|fp16|bf16))+$")


def _family_key(name: str) -> str:
    key = name.lower().rsplit("/", 1)[-1].removeprefix("meta-")
    key = _SUFFIXES.sub("", key)
    return "mistral-7b-v0.1" if key == "mistral-7b" else key


def resolve_architecture(base_model: str, model_path: str | None = None) -> tuple[Architecture, str]:
    """The architecture and where it came from: a local config.json first, then the shipped facts."""
    for candidate in (model_path, base_model):
        if candidate and (Path(candidate) / "config.json").is_file():
            config = json.loads((Path(candidate) / "config.json").read_text(encoding="utf-8"))
            return Architecture.from_config(config), str(Path(candidate) / "config.json")
    key = _family_key(base_model)
    if key in KNOWN_ARCHITECTURES:
        return KNOWN_ARCHITECTURES[key], f"shipped facts for {key}"
    raise HardwareIncompatibleError(
        f"Cannot size {base_model!r}: no config.json under model_path ({model_path!r}) and it is not one of the "
        f"shipped architectures ({', '.join(sorted(KNOWN_ARCHITECTURES))}). Set model_path to a local copy."
    )


# Calibration (see the module docstring). Bytes of saved activations per token, per layer, in units of the hidden
# size, without and with gradient checkpointing; and a fixed allowance for the CUDA context and allocator slack.
ACT_PER_TOKEN_LAYER_HIDDEN = 34.0
ACT_CHECKPOINTED_PER_TOKEN_LAYER_HIDDEN = 2.0
LOGIT_BYTES_PER_TOKEN_VOCAB = 4.0
FIXED_OVERHEAD_GIB = 0.5
NF4_BYTES_PER_PARAM = (
    0.5 + 4 / 64
)  # 4-bit weights plus one fp32 absmax per 64-weight block (not double-quantised)


@dataclass(frozen=True)
class VramEstimate:
    weights_gib: float
    adapter_gib: float
    activations_gib: float
    logits_gib: float
    overhead_gib: float
    total_gib: float
    source: str

    def to_metadata(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def estimate_vram(
    arch: Architecture,
    *,
    method: str,
    rank: int,
    batch_size: int,
    seq_len: int,
    gradient_checkpointing: bool,
    optimizer: str = "adamw_torch",
    source: str = "",
) -> VramEstimate:
    """Peak allocated GPU memory (GiB) of one training step."""
    strategy = get_strategy(method)
    embed_bytes = arch.embedding_params() * 2
    linear_bytes = arch.linear_params() * (NF4_BYTES_PER_PARAM if strategy.load_in_4bit else 2)
    adapter_params = arch.num_layers * sum(
        rank * (a + b) + (b if strategy.use_dora else 0) for a, b in arch.linear_shapes()
    )
    state_bytes = {"adamw_torch": 8, "adamw_8bit": 2, "sgd": 0}.get(optimizer, 8)
    adapter_bytes = adapter_params * (4 + 4 + state_bytes)  # fp32 weight, gradient, optimizer state
    sequences = batch_size * (2 if strategy.data_format == "preference" else 1)
    tokens = sequences * seq_len
    per_layer = (
        ACT_CHECKPOINTED_PER_TOKEN_LAYER_HIDDEN if gradient_checkpointing else ACT_PER_TOKEN_LAYER_HIDDEN
    )
    activations = tokens * arch.num_layers * arch.hidden_size * per_layer
    if gradient_checkpointing:  # one layer is recomputed in full during the backward pass
        activations += tokens * arch.hidden_size * ACT_PER_TOKEN_LAYER_HIDDEN
    logits = tokens * arch.vocab_size * LOGIT_BYTES_PER_TOKEN_VOCAB
    weights, adapter = (embed_bytes + linear_bytes) / GIB, adapter_bytes / GIB
    total = weights + adapter + activations / GIB + logits / GIB + FIXED_OVERHEAD_GIB
    return VramEstimate(weights, adapter, activations / GIB, logits / GIB, FIXED_OVERHEAD_GIB, total, source)
