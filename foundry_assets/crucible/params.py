"""One training run's hyper-parameters: what the crucible's backends and its entry point share (so neither imports
the other for it)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainParams:
    """Hyper-parameters of one run, as resolved from the manifest's method section."""

    rank: int
    alpha: int | None
    dropout: float
    learning_rate: float
    max_steps: int
    max_seq_length: int
    logging_steps: int
    seed: int
    batch_size: int
    grad_accum: int
    orpo_beta: float = 0.1
    optim: str = "adamw_torch_fused"
    """AdamW as one fused kernel on CUDA; the CPU runs `adamw_torch` whatever is asked."""
    max_grad_norm: float = 1.0
    token_metrics: bool = False
    """Let TRL compute per-step entropy and token accuracy for SFT (an extra pass over the vocabulary, slower)."""
    padding_free: bool | None = None
    """SFT batching: True unpadded (flattened) batches, False padded ones; None the crucible's choice
    (`_padding_free`: padded for DoRA on Unsloth, the stack's own choice otherwise)."""
