"""The training-method registry: `dora`, `lora`, `orpo` and `qlora`, each a `TrainingStrategy`.

Modelled on mergekit's merge-method registry (a base class with `name()` and one typed entry point) with PEFT's
safeguards (keyword-only registration, lowercase names, duplicates refused, unknown names list the known ones).
Heavy libraries (TRL) are imported inside `build_trainer` so that reading the registry stays cheap.
"""

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from foundry_assets.crucible.batching import Batching, step_weighted_orpo_trainer, token_budget_trainer
from foundry_assets.errors import UnknownStrategyError
from foundry_assets.stages import DataFormat


@dataclass(frozen=True)
class TrainerSettings:
    """What every strategy's trainer needs, resolved from the manifest and the device."""

    output_dir: str
    max_steps: int
    batch_size: int
    grad_accum: int
    learning_rate: float
    max_seq_length: int
    logging_steps: int
    seed: int
    use_cpu: bool
    bf16: bool
    gradient_checkpointing: bool
    orpo_beta: float = 0.1
    save_steps: int = 0
    """Save a resumable checkpoint (adapter, optimizer, scheduler, RNG) every N optimizer steps; 0: none."""
    save_total_limit: int = 2
    """Checkpoints kept; two, so a kill while the newest is being written still leaves a whole one."""
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    model_loss: bool = False
    """SFT takes the model's own loss (Unsloth's fused cross-entropy) instead of TRL's, which also computes entropy
    and token accuracy over the whole vocabulary every step (12% of a step on an H100; benchmarks/RESULTS.md)."""
    padding_free: bool | None = None
    """SFT batching: True flattens each batch into one unpadded sequence, False pads it; None leaves the choice to
    the stack (Unsloth's SFTConfig decides per run; plain TRL pads)."""
    batching: Batching = "examples"
    """`examples`: `batch_size` examples per micro-batch; else token-budget micro-batches (`crucible/batching.py`)."""
    token_budget: int | None = None


def _with_batching(trainer_cls: type, settings: TrainerSettings) -> type:
    """`trainer_cls`, or where the run batches by tokens, its subclass whose DataLoader yields the planned batches."""
    if settings.batching == "examples" or settings.token_budget is None:
        return trainer_cls
    return token_budget_trainer(
        trainer_cls, budget=settings.token_budget, packed=settings.batching == "packed"
    )


class TrainingStrategy(ABC):
    """One training method: what data it takes, how the model is loaded and which trainer runs it."""

    data_format: ClassVar[DataFormat]
    load_in_4bit: ClassVar[bool] = False
    use_dora: ClassVar[bool] = False
    min_vram_gb: ClassVar[float] = 0.0
    """The product's hard floor for this method on a CUDA device (ORPO: 24 GB unless gradient checkpointing)."""

    @classmethod
    @abstractmethod
    def name(cls) -> str: ...

    @abstractmethod
    def build_trainer(
        self, *, model: Any, tokenizer: Any, train_dataset: Any, settings: TrainerSettings
    ) -> Any:
        """Return a TRL trainer ready to `.train()`."""


def _common_args(settings: TrainerSettings) -> dict[str, Any]:
    return {
        "output_dir": settings.output_dir,
        "max_steps": settings.max_steps,
        "per_device_train_batch_size": settings.batch_size,
        "gradient_accumulation_steps": settings.grad_accum,
        "learning_rate": settings.learning_rate,
        "logging_steps": settings.logging_steps,
        "seed": settings.seed,
        "data_seed": settings.seed,
        "use_cpu": settings.use_cpu,
        "bf16": settings.bf16,
        "fp16": False,
        "gradient_checkpointing": settings.gradient_checkpointing,
        "report_to": [],
        "save_strategy": "steps" if settings.save_steps else "no",
        "save_steps": settings.save_steps or 500,
        "save_total_limit": settings.save_total_limit,
        "max_grad_norm": settings.max_grad_norm,
        # Speed (benchmarks/RESULTS.md): pinned host memory lets the batch copy overlap the step; the batches are
        # small token-id tensors, so the collator runs in the main process (a worker would cost more to start).
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": not settings.use_cpu,
        "disable_tqdm": True,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "optim": settings.optim,
    }


class _SFTStrategy(TrainingStrategy):
    data_format = "sft"

    def build_trainer(
        self, *, model: Any, tokenizer: Any, train_dataset: Any, settings: TrainerSettings
    ) -> Any:
        from trl import SFTConfig, SFTTrainer

        # Only an explicit choice is passed: Unsloth's SFTConfig reads an unset (None) padding_free as "decide
        # for me", while TRL's own default is False.
        batching: dict[str, Any] = (
            {} if settings.padding_free is None else {"padding_free": settings.padding_free}
        )
        # The rows are TRL's conversational prompt-completion format (`curator.formats`): TRL (and Unsloth's patched
        # dataset preparation) render them with the tokenizer's chat template and, prompt-completion data being
        # detected, train on the completion only (completion_only_loss); `crucible.labels` checks the result.
        args = SFTConfig(
            **_common_args(settings),
            max_length=settings.max_seq_length,
            packing=False,
            **batching,
        )
        trainer_cls = _model_loss_trainer(SFTTrainer) if settings.model_loss else SFTTrainer
        trainer_cls = _with_batching(trainer_cls, settings)
        return trainer_cls(model=model, processing_class=tokenizer, train_dataset=train_dataset, args=args)


def _model_loss_trainer(base: type) -> type:
    """`base` (TRL's SFTTrainer, as Unsloth patched it) with the loss the model computes from its labels."""
    from transformers import Trainer

    class ModelLossSFTTrainer(base):
        def compute_loss(
            self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            return Trainer.compute_loss(
                self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )

    return ModelLossSFTTrainer


class LoraStrategy(_SFTStrategy):
    """Supervised fine-tuning of plain LoRA adapters over a 16-bit base (the benchmark's reference method)."""

    @classmethod
    def name(cls) -> str:
        return "lora"


class DoraStrategy(_SFTStrategy):
    """Supervised fine-tuning with weight-decomposed LoRA (DoRA) on all linear layers."""

    use_dora = True

    @classmethod
    def name(cls) -> str:
        return "dora"


class QloraStrategy(_SFTStrategy):
    """Supervised fine-tuning of LoRA adapters over a 4-bit (NF4) quantised base."""

    load_in_4bit = True

    @classmethod
    def name(cls) -> str:
        return "qlora"


class OrpoStrategy(TrainingStrategy):
    """Odds-ratio preference optimisation on prompt/chosen/rejected triplets (no reference model)."""

    data_format = "preference"
    min_vram_gb = 24.0

    @classmethod
    def name(cls) -> str:
        return "orpo"

    def build_trainer(
        self, *, model: Any, tokenizer: Any, train_dataset: Any, settings: TrainerSettings
    ) -> Any:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        args = ORPOConfig(
            **_common_args(settings),
            max_length=settings.max_seq_length,
            beta=settings.orpo_beta,
        )
        weighted = ORPOTrainer if settings.batching == "examples" else step_weighted_orpo_trainer(ORPOTrainer)
        trainer_cls = _with_batching(weighted, settings)
        return trainer_cls(model=model, processing_class=tokenizer, train_dataset=train_dataset, args=args)


_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_REGISTRY: dict[str, type[TrainingStrategy]] = {}


def register_strategy(*, strategy: type[TrainingStrategy]) -> None:
    """Add a strategy under its lowercase `name()`; registering a name twice is an error."""
    name = strategy.name()
    if not _NAME_RE.match(name):
        raise ValueError(f"Strategy name {name!r} must be lowercase letters, digits and underscores.")
    if name in _REGISTRY:
        raise ValueError(
            f"A training strategy named {name!r} is already registered ({_REGISTRY[name].__name__})."
        )
    _REGISTRY[name] = strategy


def registered_names() -> list[str]:
    return sorted(_REGISTRY)


def get_strategy(name: str) -> TrainingStrategy:
    """Instantiate the strategy registered as `name`, or list the known ones."""
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise UnknownStrategyError(
            f"Unknown training method {name!r}; registered methods are: {', '.join(registered_names())}."
        ) from None


for _strategy in (DoraStrategy, LoraStrategy, OrpoStrategy, QloraStrategy):
    register_strategy(strategy=_strategy)
