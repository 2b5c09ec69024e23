"""Peak-VRAM estimate of a training job from the model's architecture alone (no weights are loaded).

The estimate adds weights (16-bit, or NF4 for the linear layers of a 4-bit base), the adapter with its gradients and
AdamW state, activations kept for the backward pass (all of them, or one checkpoint per layer with gradient
checkpointing), and the logits. Preference methods (ORPO) run chosen and rejected through the model, so twice the
sequences. The coefficients were calibrated against peak allocated memory measured on an H100 with Unsloth (the
table is in README.md; `benchmarks/gpu_suite.py` re-measures it).

Architectures come from a local `config.json` or, for air-gapped planning, from facts shipped here for the common
public bases; an unknown name with no local config is an error, never a guess.
"""

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from foundry_assets.crucible.model_config import architecture_facts, read_model_config
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
    def from_config(cls, config: dict[str, Any], source: str = "config.json") -> "Architecture":
        """The architecture of a parsed config.json; a missing, malformed or out-of-range key is a named error."""
        facts = architecture_facts(config, source)
        return cls(
            hidden_size=facts.hidden_size,
            intermediate_size=facts.intermediate_size,
            num_layers=facts.num_hidden_layers,
            num_heads=facts.num_attention_heads,
            num_kv_heads=facts.num_key_value_heads or facts.num_attention_heads,
            vocab_size=facts.vocab_size,
            tie_word_embeddings=facts.tie_word_embeddings,
            head_dim=facts.head_dim,
        )


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


def _config_is_4bit(config: dict[str, Any]) -> bool:
    quantization = config.get("quantization_config")
    if not isinstance(quantization, dict):
        return False
    return bool(quantization.get("load_in_4bit")) or quantization.get("quant_method") == "bitsandbytes_4bit"


def is_prequantized_4bit(base_model: str, model_path: str | None = None) -> bool:
    """Whether the base checkpoint itself is 4-bit (e.g. `unsloth/llama-3-8b-bnb-4bit`), whatever the method."""
    for candidate in (model_path, base_model):
        if candidate and (Path(candidate) / "config.json").is_file():
            return _config_is_4bit(read_model_config(Path(candidate) / "config.json"))
    return "bnb-4bit" in base_model.lower()


def resolve_architecture(base_model: str, model_path: str | None = None) -> tuple[Architecture, str]:
    """The architecture and where it came from: a local config.json first, then the shipped facts."""
    for candidate in (model_path, base_model):
        if candidate and (Path(candidate) / "config.json").is_file():
            path = Path(candidate) / "config.json"
            return Architecture.from_config(read_model_config(path), str(path)), str(path)
    key = _family_key(base_model)
    if key in KNOWN_ARCHITECTURES:
        return KNOWN_ARCHITECTURES[key], f"shipped facts for {key}"
    raise HardwareIncompatibleError(
        f"Cannot size {base_model!r}: no config.json under model_path ({model_path!r}) and it is not one of the "
        f"shipped architectures ({', '.join(sorted(KNOWN_ARCHITECTURES))}). Set model_path to a local copy."
    )


# Calibration (README "GPU training, pre-flight and the VRAM estimator"; `benchmarks/gpu_suite.py` re-measures it).
# The model is physical: each term counts the tensors that training keeps, and a few coefficients, fitted to peak
# allocated memory measured on an H100 with Unsloth, absorb what kernels fuse away or add. Activation terms are in
# bytes per token per layer, as multiples of the layer's own widths (see `_layer_activation_bytes`).
ACT_SCALE = 0.71
"""Saved activations without checkpointing, relative to a plain bf16 Llama layer with LoRA (`_layer_activation_bytes`):
Unsloth's fused SwiGLU and RMSNorm keep 29% less."""
DORA_ACT_SCALE = 1.73
"""DoRA also keeps each projection's base output for the magnitude gradient, relative to 2 bytes per output unit.
Fitted on the H200 at Llama-3.1-8B shape (seq 1024, batch 2: 32.49 GiB measured against LoRA's 23.38) with padded
batches through Unsloth's compiled layers (the crucible's DoRA default); it also gives the H100's 1B measurement of that
path (21.19 GiB at seq 2048, batch 4). The earlier 3.35 was fitted to the padding-free eager path (28.41 GiB there)."""
CHECKPOINT_BYTES_PER_TOKEN_LAYER_HIDDEN = 0.0
"""With Unsloth's gradient checkpointing the per-layer checkpoint is offloaded to host memory (HF's keeps 2 bytes)."""
SFT_LOGIT_BYTES_PER_TOKEN_VOCAB = 0.0
"""Unsloth's fused, chunked cross-entropy never holds the full logits for SFT."""
PREFERENCE_LOGIT_BYTES_PER_TOKEN_VOCAB = 0.0
"""Measured: under Unsloth, ORPO's chosen+rejected log-probabilities are computed in chunks too (no full logits)."""
FIXED_OVERHEAD_GIB = 0.36
"""Allocator and workspace buffers (cuBLAS, Triton) that scale with nothing above."""
CUDA_CONTEXT_GIB = 0.6
"""Memory the CUDA context takes outside PyTorch's allocator; added to what must be free, not to peak allocated."""
RESERVE_FACTOR = 1.05
"""Reserved-over-allocated slack of PyTorch's caching allocator at the peak."""
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)
"""4-bit weights, one 8-bit absmax per 64 weights, one float32 second-level scale per 256 blocks (double quant)."""
OPTIMIZER_STATE_BYTES = {
    "adamw_torch": 8,
    "adamw_torch_fused": 8,
    "adamw_8bit": 2,
    "paged_adamw_8bit": 2,
    "sgd": 0,
}


@dataclass(frozen=True)
class VramEstimate:
    """Peak memory of one training step, by part (GiB); `required_gb` is what must be free, in decimal GB."""

    weights_gib: float
    adapter_gib: float
    activations_gib: float
    logits_gib: float
    overhead_gib: float
    total_gib: float
    """Peak memory allocated by PyTorch, the number calibrated against `torch.cuda.max_memory_allocated()`."""
    required_gb: float
    """Free device memory the job needs: total with allocator slack and the CUDA context, in GB (10**9 bytes)."""
    gradient_checkpointing: bool
    source: str
    batch_tokens: int = 0
    """Token positions of the micro-batch sized: batch x sequence (x2 for preference pairs), or the token budget."""

    def to_metadata(self) -> dict[str, Any]:
        return {f"vram_{k}": round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}

    def describe(self) -> str:
        return (
            f"estimated peak {self.total_gib:.1f} GiB allocated for {self.batch_tokens:,}-token micro-batches (weights {self.weights_gib:.1f}, adapter+optimizer "
            f"{self.adapter_gib:.2f}, activations {self.activations_gib:.1f}, logits {self.logits_gib:.1f}), "
            f"{self.required_gb:.1f} GB free needed"
            f"{' with gradient checkpointing' if self.gradient_checkpointing else ''}"
        )


@dataclass(frozen=True)
class JobShape:
    """What, besides the device, decides a training job's memory: read from the manifest and the model config."""

    arch: Architecture
    method: str
    rank: int
    batch_size: int
    seq_len: int
    optimizer: str = "adamw_torch_fused"
    source: str = ""
    weights_4bit: bool = False
    """The base checkpoint is already 4-bit (any method then trains over NF4 weights)."""
    token_budget: int | None = None
    """Token-budget batching (`method_config.token_budget`): every micro-batch holds at most this many token positions,
    padding included, whatever batch_size and seq_len say."""

    def estimate(self, *, gradient_checkpointing: bool) -> VramEstimate:
        return estimate_vram(
            self.arch,
            method=self.method,
            rank=self.rank,
            batch_size=self.batch_size,
            seq_len=self.seq_len,
            gradient_checkpointing=gradient_checkpointing,
            optimizer=self.optimizer,
            source=self.source,
            weights_4bit=self.weights_4bit,
            token_budget=self.token_budget,
        )


def job_shape(
    *,
    base_model: str,
    model_path: str | None,
    method: str,
    rank: int,
    batch_size: int,
    seq_len: int,
    optimizer: str = "adamw_torch_fused",
    token_budget: int | None = None,
) -> JobShape:
    """Size a job from a local config.json or the shipped facts; an unknown model is an error, never a guess."""
    arch, source = resolve_architecture(base_model, model_path)
    return JobShape(
        arch=arch,
        method=method,
        rank=rank,
        batch_size=batch_size,
        seq_len=seq_len,
        optimizer=optimizer,
        source=source,
        weights_4bit=is_prequantized_4bit(base_model, model_path),
        token_budget=token_budget,
    )


def _layer_activation_bytes(arch: Architecture) -> float:
    """Bytes per token that one bf16 Llama layer with LoRA keeps for backward (no checkpointing).

    Residual input, two RMSNorm outputs, q/k/v, attention output and o_proj's input, four MLP-wide tensors (gate,
    up, SiLU(gate), their product); LoRA's rank-sized intermediates are negligible.
    """
    h, i = arch.hidden_size, arch.intermediate_size
    return 2.0 * (5 * h + arch.q_dim + 2 * arch.kv_dim + 4 * i)


def _dora_extra_bytes(arch: Architecture) -> float:
    """Bytes per token per layer DoRA adds: the base output of each of the seven projections."""
    return 2.0 * sum(out for _, out in arch.linear_shapes())


def estimate_vram(
    arch: Architecture,
    *,
    method: str,
    rank: int,
    batch_size: int,
    seq_len: int,
    gradient_checkpointing: bool,
    optimizer: str = "adamw_torch_fused",
    source: str = "",
    weights_4bit: bool = False,
    token_budget: int | None = None,
) -> VramEstimate:
    """Peak allocated GPU memory of one Unsloth step from the architecture alone; `token_budget`: a micro-batch's."""
    strategy = get_strategy(method)
    if optimizer not in OPTIMIZER_STATE_BYTES:
        raise HardwareIncompatibleError(
            f"Cannot size optimizer {optimizer!r}; known: {', '.join(sorted(OPTIMIZER_STATE_BYTES))}."
        )
    # weights: embeddings (and an untied LM head) stay 16-bit; the linear layers are NF4 for a 4-bit base
    four_bit = strategy.load_in_4bit or weights_4bit
    linear_bytes = arch.linear_params() * (NF4_BYTES_PER_PARAM if four_bit else 2.0)
    weights = arch.embedding_params() * 2.0 + linear_bytes
    # adapter: float32 weights, their gradients and the optimizer's state; DoRA adds one magnitude per output
    adapter_params = arch.num_layers * sum(
        rank * (a + b) + (b if strategy.use_dora else 0) for a, b in arch.linear_shapes()
    )
    adapter = adapter_params * (4 + 4 + OPTIMIZER_STATE_BYTES[optimizer])
    # activations: preference methods run chosen and rejected, twice the sequences
    sequences = batch_size * (2 if strategy.data_format == "preference" else 1)
    tokens = token_budget if token_budget is not None else sequences * seq_len
    per_layer = ACT_SCALE * _layer_activation_bytes(arch)
    if strategy.use_dora:
        per_layer += DORA_ACT_SCALE * _dora_extra_bytes(arch)
    if gradient_checkpointing:  # a checkpoint per layer, and one layer recomputed in full during backward
        activations = tokens * (
            arch.num_layers * CHECKPOINT_BYTES_PER_TOKEN_LAYER_HIDDEN * arch.hidden_size + per_layer
        )
    else:
        activations = tokens * arch.num_layers * per_layer
    logit_bytes = (
        PREFERENCE_LOGIT_BYTES_PER_TOKEN_VOCAB
        if strategy.data_format == "preference"
        else SFT_LOGIT_BYTES_PER_TOKEN_VOCAB
    )
    logits = tokens * arch.vocab_size * logit_bytes
    total = (weights + adapter + activations + logits) / GIB + FIXED_OVERHEAD_GIB
    required_gb = (total * RESERVE_FACTOR + CUDA_CONTEXT_GIB) * GIB / 10**9
    return VramEstimate(
        weights_gib=weights / GIB,
        adapter_gib=adapter / GIB,
        activations_gib=activations / GIB,
        logits_gib=logits / GIB,
        overhead_gib=FIXED_OVERHEAD_GIB,
        total_gib=total,
        required_gb=required_gb,
        gradient_checkpointing=gradient_checkpointing,
        source=source,
        batch_tokens=tokens,
    )
