"""Training on the chat template: the label check before any step, and the template the adapter ships with."""

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from foundry_assets.chat_template import DEFAULT_CHAT_TEMPLATE, completion_ids, end_of_turn
from foundry_assets.crucible.hardware import check_hardware
from foundry_assets.crucible.labels import TemplateCheck, check_trained_labels
from foundry_assets.crucible.train import train_adapter
from foundry_assets.demo.tiny_model import CHAT_TEMPLATE
from foundry_assets.errors import TrainingError

from .conftest import PARAMS, UNSLOTH, qa

BACKEND = "unsloth" if UNSLOTH else "peft"
NO_EOS_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
"""The demo template with the eos_token after each turn left out: nothing ever tells the model to stop."""


def rows(tokenizer: Any, n: int = 3) -> list[dict[str, Any]]:
    """Rows as TRL tokenizes prompt-completion data: the whole conversation, the prompt's labels masked."""
    out = []
    for i in range(n):
        ids, start = completion_ids(tokenizer, qa(i)["prompt"], qa(i)["completion"])
        out.append({"input_ids": ids, "labels": [-100] * start + ids[start:]})
    return out


def test_the_demo_template_closes_the_answer_with_eos_and_the_check_passes(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    turn = end_of_turn(tokenizer)
    assert turn is not None and (turn.token, turn.token_id) == ("</s>", tokenizer.eos_token_id)
    assert tokenizer.decode(list(turn.header_ids)) == "<|assistant|>\n"
    good = rows(tokenizer)
    assert check_trained_labels(good, tokenizer, source="base", max_length=64) == TemplateCheck(
        "base", "</s>", 3
    )
    unsloth_style = [
        {"input_ids": r["input_ids"], "completion_mask": [int(x != -100) for x in r["labels"]]} for r in good
    ]
    assert check_trained_labels(unsloth_style, tokenizer, source="base", max_length=64).rows_checked == 3


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (
            lambda r: {**r, "labels": list(r["input_ids"])},
            "prompt tokens are trained",
        ),  # the old text-field way
        (lambda r: {**r, "labels": [*r["labels"][:-2], -100, -100]}, "'</s>' carries no label"),
        (lambda r: {**r, "labels": [-100] * len(r["labels"])}, "no token carries a label"),
    ],
)
def test_wrong_labels_are_refused_naming_the_template_and_token(
    tiny_model_dir: Path, spoil: Any, message: str
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    bad = [*rows(tokenizer, 2), spoil(rows(tokenizer, 3)[2])]
    with pytest.raises(TrainingError, match=message) as info:
        check_trained_labels(bad, tokenizer, source="base", max_length=64)
    assert "training row 2 under the base tokenizer's chat template (end-of-turn token '</s>')" in str(
        info.value
    )
    # a row cut at max_seq_length may have lost its end-of-turn token: only the prompt check applies to it
    if "carries no label" in message and "no token" not in message:
        assert check_trained_labels(bad, tokenizer, source="base", max_length=len(bad[2]["input_ids"]))


@pytest.mark.slow
def test_data_that_leaves_no_row_at_max_seq_length_fails_before_any_step(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Rows whose answer does not fit max_seq_length are dropped by the trainer; none left was a sampler's
    'num_samples=0' from inside the Trainer, after the label check had passed on an empty sample."""
    with pytest.raises(
        TrainingError, match=r"no training row is left .* at max_seq_length 8 .*max_seq_length"
    ):
        train_adapter(
            model_path=tiny_model_dir,
            strategy_name="lora",
            train_examples=[qa(i) for i in range(8)],
            out_dir=tmp_path / "adapter",
            params=dataclasses.replace(PARAMS, max_seq_length=8),
            hardware=check_hardware("lora", device="cpu"),
            backend=BACKEND,  # type: ignore[arg-type]
        )
    assert not (tmp_path / "adapter").exists()


def base_with_template(tiny_model_dir: Path, folder: Path, template: str | None) -> Path:
    """A copy of the tiny base whose tokenizer has `template` (None: no chat template at all)."""
    shutil.copytree(tiny_model_dir, folder)
    (folder / "chat_template.jinja").unlink()
    if template is not None:
        (folder / "chat_template.jinja").write_text(template)
    assert AutoTokenizer.from_pretrained(str(folder)).chat_template == template
    return folder


def train(model_path: Path, out: Path) -> Any:
    return train_adapter(
        model_path=model_path,
        strategy_name="lora",
        train_examples=[qa(i) for i in range(32)],
        out_dir=out,
        params=PARAMS,
        hardware=check_hardware("lora", device="cpu"),
        backend=BACKEND,  # type: ignore[arg-type]
    )


@pytest.mark.slow
def test_a_template_without_eos_after_the_answer_fails_before_any_step(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    base = base_with_template(tiny_model_dir, tmp_path / "base", NO_EOS_TEMPLATE)
    with pytest.raises(TrainingError, match=r"emits no end-of-turn token after an assistant turn") as info:
        train(base, tmp_path / "adapter")
    assert "'</s>'" in str(info.value) and "{{ eos_token }}" in str(info.value)
    assert not (tmp_path / "adapter").exists()


@pytest.mark.slow
def test_a_base_without_a_template_trains_with_the_default_and_ships_it(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    base = base_with_template(tiny_model_dir, tmp_path / "base", None)
    result = train(base, tmp_path / "adapter")
    assert result.chat_template == {"source": "default", "end_of_turn": "</s>", "rows_checked": 16}
    assert AutoTokenizer.from_pretrained(str(tmp_path / "adapter")).chat_template == DEFAULT_CHAT_TEMPLATE
    assert result.steps == PARAMS.max_steps


@pytest.mark.slow
def test_the_adapter_ships_the_template_it_trained_with(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = train(tiny_model_dir, tmp_path / "adapter")
    assert result.chat_template == {"source": "base", "end_of_turn": "</s>", "rows_checked": 16}
    assert AutoTokenizer.from_pretrained(str(tmp_path / "adapter")).chat_template == CHAT_TEMPLATE
