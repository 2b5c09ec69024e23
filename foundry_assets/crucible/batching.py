"""Token-budget batching: micro-batches filled to a number of tokens instead of a number of examples.

Real instruction data is short and long-tailed (median 250 tokens, a tail past 900): batches of `compute.batch_size`
examples are mostly padding when padded and too small to fill the card either way, so a step's fixed cost dominates
(benchmarks/RESULTS.md § real lengths). `method_config.batching` other than `examples` plans the micro-batches from
the trainer's own tokenized rows, each holding whole examples up to `method_config.token_budget` tokens:

- `length_grouped`: examples of similar length batched together and padded to the longest, as many rows as fit the
  budget (rows x longest row). The tensors are the default path's (padded rows with an attention mask), so Unsloth's
  per-decoder-layer compile still applies; the only choice for ORPO, whose trainer runs a pair's chosen and rejected
  answers as two padded rows of one batch (TRL cannot pack preference pairs).
- `packed` (SFT): examples packed best-fit-decreasing into one row of at most the budget, with position ids restarting
  at 0 for each example and no attention mask. transformers confines attention to each example from those position
  ids (`masking_utils.find_packed_sequence_indices`: a block-diagonal causal mask on sdpa/eager, varlen boundaries on
  flash attention); Unsloth reads the same boundaries as `packed_seq_lengths`. Each example's first label is masked,
  so no example is trained to predict the next one's first token.

The loss is the stack's own and does not depend on how a step's examples are cut into micro-batches: the HF Trainer
sums the token losses of the `grad_accum` micro-batches of one optimizer step and divides by their label count
(`num_items_in_batch`), the per-token mean of the step (tests: `foundry_assets_tests/crucible/test_batching.py`).
ORPO's loss is TRL's, a mean over each micro-batch (its NLL per token, its odds-ratio term per pair); with token-budget
batching each micro-batch's terms are weighted by its share of the step's chosen tokens and pairs
(`step_weighted_orpo_trainer`), so a step's loss is its pairs' as one batch there too.

The plan is made once per run (seeded): examples are shuffled, then planned in windows of about WINDOW_BATCHES
budgets, longest first. Every epoch visits the same micro-batches in a new seeded order with the largest first, so a
run that does not fit shows it at its first step, and a resumed run skips the same batches it trained.
"""

import bisect
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from foundry_assets.errors import TrainingError

Batching = Literal["examples", "length_grouped", "packed"]
BATCHINGS: tuple[Batching, ...] = ("examples", "length_grouped", "packed")
WINDOW_BATCHES = 64
"""Examples are planned in windows of about this many budgets: wide enough that lengths sort into tight groups, narrow
enough that every part of the data mixes into every stretch of the run (HF's LengthGroupedSampler uses 50 batches)."""
IGNORE_INDEX = -100
_LOSS_MASKS = {"completion_mask", "assistant_masks"}


@dataclass(frozen=True)
class BatchPlan:
    """The planned micro-batches (lists of example indices) and what each one occupies on the device (tokens)."""

    batches: list[list[int]]
    slots: list[int]
    """Token positions each micro-batch occupies: rows x longest row (length-grouped) or its row's length (packed)."""
    tokens: list[int]
    """Real (non-padding) tokens of each micro-batch."""

    @property
    def padding_share(self) -> float:
        total = sum(self.slots)
        return 1.0 - sum(self.tokens) / total if total else 0.0


def plan_batches(costs: Sequence[int], budget: int, *, packed: bool, seed: int) -> BatchPlan:
    """Micro-batches of whole examples, each within `budget` tokens; `costs[i]` is the tokens example i occupies.

    An example costlier than the budget (only possible where the trainer did not truncate it) gets a batch of its own.
    """
    if budget < 1:
        raise ValueError(f"token_budget must be at least 1, got {budget}")
    order = list(range(len(costs)))
    random.Random(seed).shuffle(order)
    batches: list[list[int]] = []
    for window in _windows(order, costs, WINDOW_BATCHES * budget):
        window.sort(key=lambda i: (-costs[i], i))
        batches += _best_fit(window, costs, budget) if packed else _grouped(window, costs, budget)
    tokens = [sum(costs[i] for i in batch) for batch in batches]
    slots = tokens if packed else [len(batch) * max(costs[i] for i in batch) for batch in batches]
    return BatchPlan(batches, list(slots), tokens)


def _windows(order: list[int], costs: Sequence[int], size: int) -> Iterator[list[int]]:
    window: list[int] = []
    used = 0
    for index in order:
        window.append(index)
        used += costs[index]
        if used >= size:
            yield window
            window, used = [], 0
    if window:
        yield window


def _grouped(window: list[int], costs: Sequence[int], budget: int) -> list[list[int]]:
    """Longest first: a batch takes the next example while its rows, padded to its first (longest), fit `budget`."""
    batches: list[list[int]] = []
    current: list[int] = []
    for index in window:
        if current and (len(current) + 1) * costs[current[0]] > budget:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def _best_fit(window: list[int], costs: Sequence[int], budget: int) -> list[list[int]]:
    """Best-fit decreasing: each example (longest first) into the open row it fills most tightly, else a new row."""
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (tokens left, row), sorted
    for index in window:
        cost = costs[index]
        k = bisect.bisect_left(free, (cost, -1))
        if k == len(free):
            rows.append([index])
            bisect.insort(free, (budget - cost, len(rows) - 1))
            continue
        left, row = free.pop(k)
        rows[row].append(index)
        bisect.insort(free, (left - cost, row))
    return rows


class TokenBudgetBatches:
    """The DataLoader's batch sampler: the planned micro-batches, in a new seeded order each epoch, largest first."""

    def __init__(self, plan: BatchPlan, seed: int) -> None:
        self.plan, self.seed, self.epoch = plan, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.plan.batches)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(range(len(self.plan.batches)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        if order:
            largest = max(order, key=lambda k: (self.plan.slots[k], -k))
            order.remove(largest)
            order.insert(0, largest)
        for k in order:
            yield list(self.plan.batches[k])


def example_costs(rows: Any) -> list[int]:
    """Tokens each tokenized row occupies in a micro-batch: its length (SFT), or for a preference pair twice its
    longer answer (ORPO pads chosen and rejected to one length and runs both)."""
    columns = set(rows.column_names)
    if {"chosen_input_ids", "rejected_input_ids"} <= columns:
        chosen, rejected = rows["chosen_input_ids"], rows["rejected_input_ids"]
        return [2 * max(len(c), len(r)) for c, r in zip(chosen, rejected, strict=True)]
    if "input_ids" in columns:
        return [len(ids) for ids in rows["input_ids"]]
    raise TrainingError(
        f"token-budget batching needs the trainer's tokenized rows (input_ids, or chosen/rejected_input_ids); "
        f"the training set has columns {sorted(columns)}"
    )


def token_budget_trainer(base: type, *, budget: int, packed: bool) -> type:
    """`base` (a TRL trainer class) whose training DataLoader yields the planned token-budget micro-batches."""
    from torch.utils.data import DataLoader

    class TokenBudgetTrainer(base):
        batch_plan: BatchPlan | None = None

        def get_train_dataloader(self) -> Any:
            import datasets

            rows = self.train_dataset
            if isinstance(rows, datasets.Dataset):
                rows = self._remove_unused_columns(rows, description="training")
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            self.batch_plan = plan_batches(example_costs(rows), budget, packed=packed, seed=seed)
            loader = DataLoader(
                rows,
                batch_sampler=TokenBudgetBatches(self.batch_plan, seed),
                collate_fn=self.data_collator,
                num_workers=self.args.dataloader_num_workers,
                pin_memory=self.args.dataloader_pin_memory,
            )
            return self.accelerator.prepare(loader)

    return TokenBudgetTrainer


def step_weighted_orpo_trainer(base: type) -> type:
    """`base` (TRL's ORPOTrainer) whose loss over an optimizer step's micro-batches is the loss of the step's pairs as
    one batch: its NLL term a per-token mean over every chosen answer of the step, its odds-ratio term a mean over
    every pair of the step.

    TRL's ORPO loss is a mean over each micro-batch (`get_batch_loss_metrics`: NLL per token, odds ratio per pair) and
    the Trainer divides it by the accumulation steps, so with `grad_accum` > 1 a micro-batch of two long pairs would
    weigh as much as one of thirty short ones. Each micro-batch's terms are weighted here by its share of the step's
    chosen tokens and pairs (counted when the Trainer fetches the step's micro-batches), as the SFT trainers' loss
    already is through `num_items_in_batch`."""

    class StepWeightedORPOTrainer(base):
        # the training micro-batches whose loss was weighted (in the run's batching record)
        weighted_micro_batches = 0
        _step: tuple[int, Any] | None = None  # the step's pairs and NLL tokens
        _nll: tuple[Any, Any] | None = None  # this micro-batch's NLL term and its tokens
        _odds: Any = None  # this micro-batch's per-pair odds-ratio terms

        def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> Any:
            batches, items = super().get_batch_samples(epoch_iterator, num_batches, device)
            pairs = sum(int(b["chosen_input_ids"].shape[0]) for b in batches)
            self._step = (
                (pairs, sum(_nll_tokens(b["chosen_attention_mask"]) for b in batches)) if batches else None
            )
            return batches, items

        def concatenated_forward(self, model: Any, batch: Any) -> Any:
            out = super().concatenated_forward(model, batch)
            self._nll = (out[4], _nll_tokens(batch["chosen_attention_mask"]))
            return out

        def odds_ratio_loss(self, chosen_logps: Any, rejected_logps: Any) -> Any:
            out = super().odds_ratio_loss(chosen_logps, rejected_logps)
            self._odds = out[0]
            return out

        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, **kw: Any) -> Any:
            self._nll = self._odds = None
            result = super().compute_loss(model, inputs, return_outputs=return_outputs, **kw)
            if not model.training or self._step is None:
                return result  # evaluation, or a step the Trainer did not fetch through get_batch_samples
            if self._nll is None or self._odds is None:  # the loss no longer runs through TRL's two terms
                raise TrainingError(
                    f"ORPO step weighting did not see this micro-batch's NLL and odds-ratio terms ({base.__module__}."
                    f"{base.__name__} no longer calls concatenated_forward and odds_ratio_loss from compute_loss); "
                    "train with method_config.batching: examples"
                )
            (nll, tokens), odds, (step_pairs, step_tokens) = self._nll, self._odds, self._step
            trl_loss = result[0] if return_outputs else result
            # whatever TRL adds beyond the two terms (a router's aux loss) stays as it was; zero otherwise
            extra = trl_loss - (nll - odds.mean()).to(trl_loss.device)
            # the Trainer divides by the accumulation steps (ORPO batches carry no `labels` to count)
            steps = self.current_gradient_accumulation_steps
            weighted = (nll * (tokens / step_tokens) - odds.sum() / step_pairs) * steps
            loss = weighted.to(trl_loss.device) + extra
            self.weighted_micro_batches += 1
            return (loss, result[1]) if return_outputs else loss

    return StepWeightedORPOTrainer


def _nll_tokens(chosen_attention_mask: Any) -> Any:
    """Tokens ORPO's NLL term averages over in a micro-batch: every chosen token after the first (its labels are the
    chosen input ids where the attention mask is set, shifted by one). A tensor on the batch's device: no host sync."""
    return (chosen_attention_mask[:, 1:] == 1).sum()


class PackingCollator:
    """The trainer's own collator (its labels, its masks), then its padded rows packed into one row.

    Position ids restart at 0 for each example, the attention mask is dropped and no KV cache is asked for (so the
    model's masking finds the examples from the position ids), and each example's first label is masked (so no example
    learns to predict the next one's first token). `sequence_lengths` adds Unsloth's `packed_seq_lengths` (its varlen attention reads them).
    """

    def __init__(self, collate: Callable[[Any], Any], *, sequence_lengths: bool = False) -> None:
        self.collate, self.sequence_lengths = collate, sequence_lengths

    def __call__(self, features: Any) -> dict[str, Any]:
        return pack_rows(self.collate(features), sequence_lengths=self.sequence_lengths)


def pack_rows(batch: Any, *, sequence_lengths: bool = False) -> dict[str, Any]:
    """One padded batch ([B, L] tensors with an attention mask) as one packed row ([1, T], T its real tokens)."""
    import torch

    ids, mask = batch["input_ids"], batch.get("attention_mask")
    if mask is None:
        raise TrainingError(
            f"packing needs the collator's attention_mask to find each row's tokens; the batch has {sorted(batch)}"
        )
    keep = mask.bool()
    lengths = keep.sum(dim=1)
    packed: dict[str, Any] = {}
    for key, value in batch.items():
        if key == "attention_mask":
            continue
        if isinstance(value, bool | int | float | str) or value is None:
            packed[key] = value  # a flag for the model or the loss, not per token
            continue
        if not (isinstance(value, torch.Tensor) and value.shape == ids.shape):
            raise TrainingError(
                f"cannot pack the batch's {key!r} (not a [rows, length] tensor like input_ids); use "
                "method_config.batching: length_grouped"
            )
        packed[key] = value[keep].unsqueeze(0)
    packed["position_ids"] = torch.cat([torch.arange(int(n)) for n in lengths]).unsqueeze(0)
    starts = torch.cumsum(lengths, 0)[:-1]
    if "labels" in packed:
        packed["labels"][0, starts] = IGNORE_INDEX
    for key in _LOSS_MASKS & packed.keys():  # where a stack builds its labels from a mask in the model
        packed[key][0, starts] = 0
    if sequence_lengths:
        packed["packed_seq_lengths"] = lengths.to(torch.int32)
    # transformers looks for packed sequences only where no KV cache is made (masking_utils._preprocess_mask_arguments),
    # and a config with use_cache: true makes one even in training: without this the examples attend to each other
    packed["use_cache"] = False
    return packed
