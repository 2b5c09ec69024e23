"""One training run's hyper-parameters: what the crucible's backends and its entry point share (so neither imports
the other for it)."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from foundry_assets.crucible.batching import BATCHINGS, Batching

if TYPE_CHECKING:
    from foundry_assets.manifest import TrainingManifest


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
    (`trainer.padding_free`: padded for DoRA on Unsloth, the stack's own choice otherwise). Batching `examples` only."""
    batching: Batching = "examples"
    """`examples`: micro-batches of `batch_size` examples; `length_grouped` / `packed`: whole examples up to
    `token_budget` tokens per micro-batch (`crucible/batching.py`)."""
    token_budget: int | None = None
    """Tokens per micro-batch for `length_grouped` / `packed` batching (padded rows count whole)."""

    def __post_init__(self) -> None:
        problems = []
        if self.batching not in BATCHINGS:
            problems.append(f"batching {self.batching!r} is not one of {', '.join(BATCHINGS)}")
        elif self.batching == "examples" and self.token_budget is not None:
            problems.append("token_budget applies to batching length_grouped or packed, not examples")
        elif self.batching != "examples" and (self.token_budget is None or self.token_budget < 1):
            problems.append(
                f"batching {self.batching!r} needs a token_budget of at least 1 (got {self.token_budget})"
            )
        if self.batching != "examples" and self.padding_free is not None:
            problems.append(
                f"padding_free applies to batching 'examples'; batching {self.batching!r} decides the batch layout"
            )
        if problems:
            raise ValueError("TrainParams: " + "; ".join(problems))

    @classmethod
    def from_manifest(cls, manifest: "TrainingManifest") -> "TrainParams":
        """The run's parameters from the manifest's method and compute sections (the rest keep their defaults)."""
        method, compute = manifest.method_config, manifest.compute
        return cls(
            rank=method.rank,
            alpha=method.alpha,
            dropout=method.dropout,
            learning_rate=method.learning_rate,
            max_steps=method.max_steps,
            max_seq_length=method.max_seq_length,
            logging_steps=method.logging_steps,
            seed=method.seed,
            batch_size=compute.batch_size,
            grad_accum=compute.grad_accum,
            orpo_beta=method.orpo_beta,
            batching=method.batching,
            token_budget=method.token_budget,
        )
