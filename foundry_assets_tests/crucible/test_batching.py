"""Token-budget batching: the plan, the packed rows, and that packing changes neither the loss nor any example's
per-token losses (attention stays within each example), on the tiny Llama on the CPU."""

import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from foundry_assets.crucible.backend import load_with_adapters
from foundry_assets.crucible.batching import (
    IGNORE_INDEX,
    TokenBudgetBatches,
    pack_rows,
    plan_batches,
)
from foundry_assets.crucible.hardware import HardwareReport
from foundry_assets.crucible.params import TrainParams
from foundry_assets.crucible.strategies import get_strategy
from foundry_assets.crucible.train import train_adapter
from foundry_assets.errors import TrainingError
from foundry_assets.manifest import parse_manifest

from .conftest import PARAMS, UNSLOTH

CPU = HardwareReport("cpu", "cpu", None, None, gradient_checkpointing=False)
# On a CUDA host Unsloth loads its GPU backend (bf16), so these float32 CPU equalities are not what runs there.
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="float32 CPU path")
needs_unsloth = pytest.mark.skipif(
    not UNSLOTH, reason="SFT on the CPU needs Unsloth's CPU backend (TRL's loss is Triton)"
)


def long_tailed_costs(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [min(512, max(8, int(rng.lognormvariate(4.5, 0.8)))) for _ in range(n)]


@pytest.mark.parametrize("packed", [False, True])
def test_plan_holds_every_example_once_within_the_budget(packed: bool) -> None:
    costs = long_tailed_costs(4000)  # about 480k tokens: four windows of 64 budgets
    plan = plan_batches(costs, 2048, packed=packed, seed=3)
    assert sorted(i for batch in plan.batches for i in batch) == list(range(4000))
    for batch, slots, tokens in zip(plan.batches, plan.slots, plan.tokens, strict=True):
        assert tokens == sum(costs[i] for i in batch)
        assert slots == (tokens if packed else len(batch) * max(costs[i] for i in batch))
        assert slots <= 2048
    assert plan == plan_batches(costs, 2048, packed=packed, seed=3), "the plan is seeded"
    assert plan != plan_batches(costs, 2048, packed=packed, seed=4), "windows of a shuffled order"
    # the point of it: far less padding than batches of a fixed number of examples in random order
    fixed = [list(range(k, k + 8)) for k in range(0, 4000, 8)]
    fixed_padding = 1 - sum(costs) / sum(len(b) * max(costs[i] for i in b) for b in fixed)
    assert plan.padding_share < 0.1 < fixed_padding
    if packed:
        assert plan.padding_share == 0.0 and sum(plan.tokens) / len(plan.batches) > 0.9 * 2048


def test_an_example_over_the_budget_gets_a_batch_of_its_own() -> None:
    for packed in (False, True):
        plan = plan_batches([10, 5000, 20, 30], 100, packed=packed, seed=0)
        assert [1] in plan.batches and max(plan.slots) == 5000


def test_sampler_reorders_each_epoch_with_the_largest_batch_first() -> None:
    plan = plan_batches(long_tailed_costs(400), 1024, packed=False, seed=0)
    sampler = TokenBudgetBatches(plan, seed=0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert len(first) == len(second) == len(sampler) == len(plan.batches)
    assert sorted(map(sorted, first)) == sorted(map(sorted, second)) == sorted(map(sorted, plan.batches))
    assert first != second
    largest = max(plan.slots)
    for order in (first, second):
        assert plan.slots[plan.batches.index(order[0])] == largest
    sampler.set_epoch(0)
    assert list(sampler) == first, (
        "an epoch's order is reproducible (a resumed run skips the batches it trained)"
    )


def test_pack_rows_restarts_positions_and_masks_each_first_label() -> None:
    batch = {
        "input_ids": torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0], [1, 2, 3, 4]]),
        "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]),
        "labels": torch.tensor([[-100, 6, 7, -100], [8, 9, -100, -100], [-100, 2, 3, 4]]),
    }
    completion = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0], [0, 1, 1, 1]])
    packed = pack_rows({**batch, "completion_mask": completion, "return_loss": True}, sequence_lengths=True)
    assert packed["input_ids"].tolist() == [[5, 6, 7, 8, 9, 1, 2, 3, 4]]
    assert packed["completion_mask"].tolist() == [[0, 1, 1, 0, 1, 0, 1, 1, 1]]
    assert packed["return_loss"] is True
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    assert packed["labels"].tolist() == [[-100, 6, 7, IGNORE_INDEX, 9, IGNORE_INDEX, 2, 3, 4]]
    assert packed["packed_seq_lengths"].tolist() == [3, 2, 4]
    assert "attention_mask" not in packed and packed["use_cache"] is False
    with pytest.raises(TrainingError, match="cannot pack the batch's 'pixel_values'"):
        pack_rows({**batch, "pixel_values": torch.zeros(3, 2, 2)})


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_stock_model_keeps_packed_examples_apart(attention: str, tiny_model_dir: Path) -> None:
    """transformers' own Llama (no Unsloth, no adapters) with the config's use_cache: true, which makes a KV cache
    and so skips the packed-sequence mask unless the batch asks for none: a packed row gives each example the logits
    it has alone, and a row packed without that is caught by the same check."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attention)
    assert model.config.use_cache is True
    padded = _rows(3, seed=2)
    lengths = padded["attention_mask"].sum(1).tolist()
    packed = pack_rows(padded)
    with torch.no_grad():
        together = model(**{k: v for k, v in packed.items() if k != "labels"}).logits[0]
        start = 0
        for k, n in enumerate(lengths):
            alone = model(input_ids=padded["input_ids"][k : k + 1, :n], use_cache=False).logits[0]
            torch.testing.assert_close(together[start : start + n], alone, rtol=1e-5, atol=1e-5)
            start += n
        cached = {k: v for k, v in packed.items() if k not in ("labels", "use_cache")}
        leaked = model(**cached).logits[0]
    assert (leaked[lengths[0] :] - together[lengths[0] :]).abs().max() > 1e-3


def _per_token_losses(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each position's next-token loss (0 where the label is ignored), as the causal LM loss computes it."""
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
    labels = batch["labels"][:, 1:]
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return losses.view(labels.shape)


def _rows(count: int, seed: int) -> dict[str, torch.Tensor]:
    """`count` padded rows of random lengths with labels on all but the first token."""
    generator = torch.Generator().manual_seed(seed)
    lengths = [int(n) for n in torch.randint(6, 20, (count,), generator=generator)]
    width = max(lengths)
    ids = torch.zeros(count, width, dtype=torch.long)
    mask = torch.zeros(count, width, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(10, 500, (n,), generator=generator)
        mask[row, :n] = 1
    labels = torch.where(mask.bool(), ids, IGNORE_INDEX)
    labels[:, 0] = IGNORE_INDEX
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@cpu_only
@pytest.mark.parametrize("method", ["lora", "dora", "qlora"])
def test_packed_rows_give_each_example_its_own_per_token_losses(method: str, tiny_model_dir: Path) -> None:
    """Each example's per-token losses are the same packed as alone in a padded batch, and perturbing one packed
    example leaves every other example's losses as they were; attention that crosses examples is detected."""
    backend = "unsloth" if UNSLOTH else "peft"
    model, _ = load_with_adapters(
        backend, model_path=str(tiny_model_dir), strategy=get_strategy(method), params=PARAMS, hardware=CPU
    )
    model.eval()
    padded = _rows(4, seed=1)
    lengths = padded["attention_mask"].sum(1).tolist()
    starts = [sum(lengths[:k]) for k in range(4)]
    with torch.no_grad():
        alone = _per_token_losses(model, padded)
        packed = pack_rows(padded)
        together = _per_token_losses(model, packed)[0]
        for k, (start, n) in enumerate(zip(starts, lengths, strict=True)):
            # position p of the pack predicts token p+1: example k's targets are its own tokens 1..n-1
            torch.testing.assert_close(
                together[start : start + n - 1], alone[k, : n - 1], rtol=1e-5, atol=1e-5
            )
        # the first label of every later example is masked: nothing predicts across a boundary
        assert all(together[start - 1] == 0 for start in starts[1:])
        assert packed["labels"].ne(IGNORE_INDEX).sum() == padded["labels"].ne(IGNORE_INDEX).sum()

        # perturb example 1 inside the pack: examples 0, 2 and 3 keep their losses exactly
        perturbed = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in packed.items()}
        s1, n1 = starts[1], lengths[1]
        perturbed["input_ids"][0, s1 : s1 + n1] = torch.flip(perturbed["input_ids"][0, s1 : s1 + n1], [0]) + 1
        moved = _per_token_losses(model, perturbed)[0]
        assert not torch.allclose(moved[s1 : s1 + n1 - 1], together[s1 : s1 + n1 - 1])
        later = slice(starts[2], len(together))
        torch.testing.assert_close(moved[later], together[later], rtol=0, atol=1e-6)
        torch.testing.assert_close(moved[: s1 - 1], together[: s1 - 1], rtol=0, atol=1e-6)

        # the same check catches a pack whose attention is not confined to each example (an all-ones mask)
        ones = torch.ones_like(packed["input_ids"])
        leaky = _per_token_losses(model, {**perturbed, "attention_mask": ones})[0]
        leaky_before = _per_token_losses(model, {**packed, "attention_mask": ones})[0]
        assert (leaky[later] - leaky_before[later]).abs().max() > 1e-3


def varied_qa(i: int) -> dict[str, Any]:
    """An SFT row whose answer length varies from row to row (so padding and per-token weighting matter)."""
    words = " ".join(["and", "then", "more", "words", "here"] * (1 + i % 5))[: 8 + 9 * i]
    return {
        "prompt": [{"role": "user", "content": f"Question {i}: continue."}],
        "completion": [{"role": "assistant", "content": f"Answer {i}: {words}."}],
    }


def _train(
    tmp_path: Path,
    tiny_model_dir: Path,
    name: str,
    examples: list[dict[str, Any]],
    hardware: HardwareReport = CPU,
    **changes: Any,
) -> Any:
    """`name` trained on `examples` with the tests' parameters: three steps of a high learning rate, each logged."""
    params = dataclasses.replace(
        PARAMS, **{"max_steps": 3, "logging_steps": 1, "learning_rate": 1e-2, **changes}
    )
    label = "-".join(f"{k}{v}" for k, v in changes.items())
    return train_adapter(
        model_path=tiny_model_dir,
        strategy_name=name,
        train_examples=examples,
        out_dir=tmp_path / label / "adapter",
        params=params,
        hardware=hardware,
        backend="unsloth",
    )


@cpu_only
@needs_unsloth
@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "dora", "qlora"])
def test_packed_training_gives_the_loss_of_padded_batches(
    method: str, tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Eight examples of varied length, every optimizer step all eight: as one padded batch, as two micro-batches
    of four (gradient accumulation), as one packed row and as length-grouped micro-batches. The loss of each of three
    steps matches, so the gradients and updates matched too: per-token normalisation over the step, whatever the
    micro-batches, and no attention across packed examples."""
    examples = [varied_qa(i) for i in range(8)]
    reference = _train(tmp_path, tiny_model_dir, method, examples, batch_size=8)
    accumulated = _train(tmp_path, tiny_model_dir, method, examples, batch_size=4, grad_accum=2)
    packed = _train(tmp_path, tiny_model_dir, method, examples, batching="packed", token_budget=4096)
    grouped = _train(tmp_path, tiny_model_dir, method, examples, batching="length_grouped", token_budget=4096)
    expected = [loss for _, loss in reference.losses]
    assert [step for step, _ in reference.losses] == [1, 2, 3] and expected[2] < expected[0]
    for run in (accumulated, packed, grouped):
        assert [step for step, _ in run.losses] == [1, 2, 3]
        assert [loss for _, loss in run.losses] == pytest.approx(expected, rel=1e-5)
    # the packed run trained every token of the padded one, with no padding
    assert packed.tokens == reference.tokens and packed.padding_share == 0.0 < reference.padding_share
    assert packed.batching["mode"] == "packed" and packed.batching["micro_batches_per_epoch"] == 1
    assert "block-diagonal" in packed.batching["attention"]
    assert reference.batching == {
        "mode": "examples",
        "token_budget": None,
        "batch_size": 8,
        "grad_accum": 1,
        "attention": "sdpa, padded rows with an attention mask",
        "decoder_layers": "eager",
    }


@cpu_only
@needs_unsloth
@pytest.mark.slow
def test_length_grouped_micro_batches_keep_the_per_token_loss(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Sixteen examples cut by a small budget into micro-batches of different sizes: with grad_accum set to their
    number, every step holds all sixteen, and its loss is the one padded batch of sixteen gives."""
    examples = [varied_qa(i) for i in range(16)]
    reference = _train(tmp_path, tiny_model_dir, "lora", examples, batch_size=16)
    budget = 64 * 4
    probe = _train(tmp_path, tiny_model_dir, "lora", examples, batching="length_grouped", token_budget=budget)
    count = probe.batching["micro_batches_per_epoch"]
    assert count > 2 and probe.batching["largest_micro_batch_tokens"] <= budget
    grouped = _train(
        tmp_path,
        tiny_model_dir,
        "lora",
        examples,
        batching="length_grouped",
        token_budget=budget,
        grad_accum=count,
    )
    assert [loss for _, loss in grouped.losses] == pytest.approx(
        [loss for _, loss in reference.losses], rel=1e-5
    )


@cpu_only
@needs_unsloth
@pytest.mark.slow
def test_orpo_trains_on_length_grouped_pairs(
    tmp_path: Path, tiny_model_dir: Path, preference_examples: list[dict[str, Any]]
) -> None:
    """ORPO's pairs are length-grouped (a pair costs twice its longer answer); with every pair in one micro-batch its
    loss is the padded batch's."""
    pairs = preference_examples[:8]
    reference = _train(tmp_path, tiny_model_dir, "orpo", pairs, batch_size=8)
    grouped = _train(tmp_path, tiny_model_dir, "orpo", pairs, batching="length_grouped", token_budget=4096)
    assert [loss for _, loss in grouped.losses] == pytest.approx(
        [loss for _, loss in reference.losses], rel=1e-5
    )
    assert grouped.changed_params > 0 and grouped.batching["micro_batches_per_epoch"] == 1


def varied_pair(i: int) -> dict[str, Any]:
    """A preference pair whose answers grow with i (a few tokens to about sixty), the rejected one shorter."""
    return {
        "prompt": [{"role": "user", "content": f"List {i} colours."}],
        "chosen": [{"role": "assistant", "content": " ".join(["red", "blue", "green"] * (1 + 3 * i))}],
        "rejected": [{"role": "assistant", "content": " ".join(["grey"] * (1 + i))}],
    }


def _orpo_one_batch_and_grouped(tmp_path: Path, tiny_model_dir: Path, hardware: HardwareReport) -> Any:
    """Eight pairs of growing length for three steps: as one padded batch, and cut by a small budget into
    micro-batches of different numbers of pairs with grad_accum set to their number."""
    pairs = [varied_pair(i) for i in range(8)]
    reference = _train(tmp_path, tiny_model_dir, "orpo", pairs, hardware, batch_size=8)
    grouping = {"batching": "length_grouped", "token_budget": 2 * 64 * 3}
    count = _train(tmp_path, tiny_model_dir, "orpo", pairs, hardware, **grouping).batching[
        "micro_batches_per_epoch"
    ]
    assert count > 2
    grouped = _train(tmp_path, tiny_model_dir, "orpo", pairs, hardware, **grouping, grad_accum=count)
    assert grouped.batching["orpo_step_weighted_micro_batches"] == 3 * count
    assert "orpo_step_weighted_micro_batches" not in reference.batching
    return [loss for _, loss in reference.losses], [loss for _, loss in grouped.losses]


@cpu_only
@needs_unsloth
@pytest.mark.slow
def test_orpo_micro_batches_of_different_sizes_keep_the_loss_of_one_batch(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Each step's loss (NLL per chosen token, odds ratio per pair) over micro-batches of different sizes is the one
    padded batch of the step's pairs gives, so no micro-batch weighs more than its pairs and tokens."""
    expected, grouped = _orpo_one_batch_and_grouped(tmp_path, tiny_model_dir, CPU)
    assert expected[2] < expected[0]
    # to 2e-6: it matches to 1.5e-7; TRL's per-micro-batch means are 1.8e-5 to 6.3e-5 off on these random weights
    assert grouped == pytest.approx(expected, rel=2e-6)


@pytest.mark.gpu
@pytest.mark.slow
def test_orpo_step_weighting_runs_on_unsloths_cuda_path(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Unsloth's GPU backend (bf16) patches TRL's trainers: the weighting still sees every micro-batch's two terms
    (counted), and the steps' losses are the padded batch's to bf16 precision."""
    from foundry_assets.crucible.hardware import check_hardware

    expected, grouped = _orpo_one_batch_and_grouped(
        tmp_path, tiny_model_dir, check_hardware("orpo", device="cuda")
    )
    assert grouped == pytest.approx(expected, rel=2e-2)


def test_orpo_step_weighting_refuses_a_loss_it_cannot_see() -> None:
    """Should TRL's ORPO loss stop passing through its two terms, training fails at the first micro-batch and names
    the way out, instead of weighting nothing while the run claims it did."""
    from foundry_assets.crucible.batching import step_weighted_orpo_trainer

    class LossWithoutTerms:  # a compute_loss that no longer calls concatenated_forward and odds_ratio_loss
        current_gradient_accumulation_steps = 1

        def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> Any:
            mask = torch.ones(2, 5, dtype=torch.long)
            return [{"chosen_input_ids": mask, "chosen_attention_mask": mask}], None

        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, **kw: Any) -> Any:
            return torch.tensor(1.0)

    trainer = step_weighted_orpo_trainer(LossWithoutTerms)()
    trainer.get_batch_samples(iter(()), 1, "cpu")
    with pytest.raises(TrainingError, match=r"batching: examples") as caught:
        trainer.compute_loss(torch.nn.Linear(1, 1).train(), {})
    assert "LossWithoutTerms" in str(caught.value) and trainer.weighted_micro_batches == 0


def manifest(method_config: dict[str, Any]) -> Any:
    return parse_manifest(
        {
            "job_id": "job-batching",
            "base_model": "tiny-llama",
            "method_config": method_config,
            "publish_target": {"registry": "/tmp/registry", "tag": "v1"},
        }
    )


def test_manifest_batching_reaches_the_params() -> None:
    params = TrainParams.from_manifest(
        manifest({"type": "lora", "batching": "packed", "token_budget": 8192, "max_seq_length": 2048})
    )
    assert (params.batching, params.token_budget) == ("packed", 8192)
    default = TrainParams.from_manifest(manifest({"type": "lora"}))
    assert (default.batching, default.token_budget, default.padding_free) == ("examples", None, None)


@pytest.mark.parametrize(
    ("method_config", "message"),
    [
        ({"type": "lora", "batching": "packed"}, "set token_budget"),
        (
            {"type": "lora", "token_budget": 4096},
            "token_budget 4096 applies to batching length_grouped or packed",
        ),
        (
            {"type": "lora", "batching": "length_grouped", "token_budget": 256},
            r"token_budget 256 is under 512 \(max_seq_length\)",
        ),
        (
            {"type": "orpo", "batching": "length_grouped", "token_budget": 768},
            r"token_budget 768 is under 1024 \(twice max_seq_length",
        ),
        (
            {"type": "orpo", "batching": "packed", "token_budget": 4096},
            "batching 'packed' cannot be used with method",
        ),
        ({"type": "lora", "batching": "bucketed", "token_budget": 4096}, "method_config.batching"),
    ],
)
def test_manifest_refuses_batching_that_cannot_run(method_config: dict[str, Any], message: str) -> None:
    from foundry_assets.errors import ManifestError

    with pytest.raises(ManifestError, match=message):
        manifest(method_config)


def test_params_refuse_a_budget_without_token_batching() -> None:
    with pytest.raises(ValueError, match="needs a token_budget"):
        dataclasses.replace(PARAMS, batching="packed")
    with pytest.raises(ValueError, match="padding_free applies to batching 'examples'"):
        dataclasses.replace(PARAMS, batching="packed", token_budget=4096, padding_free=True)


class _Stop(Exception):
    pass


@cpu_only
@needs_unsloth
@pytest.mark.slow
def test_a_resumed_run_trains_on_the_batches_it_would_have(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Packed micro-batches across epochs: a run stopped after its step-2 checkpoint and resumed logs the same losses
    for steps 3-6 as a run that was never stopped (the resumed epoch skips exactly the batches already trained)."""
    from foundry_assets.crucible.checkpoints import CheckpointPlan, prepare

    examples = [varied_qa(i) for i in range(24)]
    params = dataclasses.replace(
        PARAMS, max_steps=6, logging_steps=1, batching="packed", token_budget=512, learning_rate=1e-2
    )

    def train(name: str, plan: CheckpointPlan | None, stop_at: int | None = None) -> Any:
        def on_log(step: int, loss: float) -> None:
            if step == stop_at:
                raise _Stop

        return train_adapter(
            model_path=tiny_model_dir,
            strategy_name="lora",
            train_examples=examples,
            out_dir=tmp_path / name / "adapter",
            params=params,
            hardware=CPU,
            on_log=on_log,
            backend="unsloth",
            checkpoints=prepare(plan) if plan else None,
        )

    whole = train("whole", None)
    assert 1 < whole.batching["micro_batches_per_epoch"] < 6, "the six steps span more than one epoch"
    plan = CheckpointPlan(tmp_path / "checkpoints", 2, "lot-A")
    with pytest.raises(_Stop):
        train("stopped", plan, stop_at=3)
    resumed = train("resumed", plan)
    assert resumed.resumed_from_step == 2
    assert [step for step, _ in resumed.losses] == [3, 4, 5, 6]
    assert [loss for _, loss in resumed.losses] == pytest.approx(
        [loss for _, loss in whole.losses[2:]], rel=1e-5
    )


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "dora", "qlora", "orpo"])
def test_token_budget_batching_on_cuda(
    method: str, tmp_path: Path, tiny_model_dir: Path, preference_examples: list[dict[str, Any]]
) -> None:
    """Unsloth's GPU backend (bf16): every example in one micro-batch, packed (SFT) or length-grouped, gives the
    padded batch's first-step loss to bf16 precision, and the run records the kernel Unsloth chose."""
    from foundry_assets.crucible.hardware import check_hardware

    hardware = check_hardware(method, device="cuda")
    examples = preference_examples[:8] if method == "orpo" else [varied_qa(i) for i in range(8)]
    modes = ["length_grouped"] + ([] if method == "orpo" else ["packed"])

    def first_loss(**changes: Any) -> Any:
        return _train(tmp_path, tiny_model_dir, method, examples, hardware, max_steps=1, **changes)

    padded = first_loss(batch_size=8, padding_free=False) if method != "orpo" else first_loss(batch_size=8)
    for mode in modes:
        run = first_loss(batching=mode, token_budget=4096)
        assert run.device == "cuda" and run.batching["micro_batches_per_epoch"] == 1
        assert run.losses[0][1] == pytest.approx(padded.losses[0][1], rel=2e-2)
        assert run.batching["attention"].startswith("unsloth ")
        if mode == "packed":
            assert run.padding_share == 0.0 and "packed_seq_lengths" in run.batching["attention"]
