"""Record shapes, the JSONL reader's errors, the conversational training rows and the deterministic split."""

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from foundry_assets.curator.contamination import content_text
from foundry_assets.curator.formats import (
    Record,
    detect_shape,
    exam_item,
    split_train_test,
    text_for_embedding,
    to_training_example,
)
from foundry_assets.curator.readers import read_jsonl
from foundry_assets.errors import DataError

ALPACA = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
ALPACA_NO_INPUT = {"instruction": "Name a prime.", "output": "7", "id": "x-1"}
MESSAGES = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
    ]
}
PROMPT_COMPLETION = {"prompt": "Capital of Peru?", "completion": "Lima."}
PREFERENCE = {"prompt": "Capital of Peru?", "chosen": "Lima.", "rejected": "Quito."}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """Write rows (objects are JSON-encoded, strings written as they are) one per line."""
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize(
    ("obj", "shape", "data_format", "expected"),
    [
        (
            ALPACA,
            "alpaca",
            "sft",
            {"prompt": user("Add the numbers.\n\n2 and 3"), "completion": assistant("5")},
        ),
        (ALPACA_NO_INPUT, "alpaca", "sft", {"prompt": user("Name a prime."), "completion": assistant("7")}),
        (
            MESSAGES,
            "messages",
            "sft",
            {"prompt": MESSAGES["messages"][:2], "completion": assistant("Hello.")},
        ),
        (
            PROMPT_COMPLETION,
            "prompt_completion",
            "sft",
            {"prompt": user("Capital of Peru?"), "completion": assistant("Lima.")},
        ),
        (
            PREFERENCE,
            "preference",
            "preference",
            {
                "prompt": user("Capital of Peru?"),
                "chosen": assistant("Lima."),
                "rejected": assistant("Quito."),
            },
        ),
    ],
)
def test_every_shape_parses_and_formats(
    tmp_path: Path, obj: dict[str, Any], shape: str, data_format: Any, expected: dict[str, Any]
) -> None:
    assert detect_shape(obj) == shape
    [record] = read_jsonl(write_jsonl(tmp_path / "d.jsonl", [obj]))
    assert (record.line, record.shape, record.data) == (1, shape, obj)
    assert to_training_example(record, data_format) == expected
    assert text_for_embedding(record)  # whole content, non-empty
    assert all(v in text_for_embedding(record) for v in ("Lima", "Hello", "7", "5") if v in json.dumps(obj))


def test_only_the_last_assistant_turn_of_a_transcript_is_the_completion() -> None:
    turns = [
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye?"},
        {"role": "assistant", "content": "Goodbye."},
    ]
    example = to_training_example(Record(1, "messages", {"messages": turns}), "sft")
    assert example == {"prompt": turns[:3], "completion": turns[3:]}  # the earlier answer is context


def test_content_text_is_the_prompt_and_answer_contents_not_template_text() -> None:
    pc = to_training_example(Record(1, "prompt_completion", PROMPT_COMPLETION), "sft")
    pref = to_training_example(Record(2, "preference", PREFERENCE), "preference")
    assert content_text(pc) == "Capital of Peru?\nLima."
    assert content_text(pref) == content_text(pc)  # the rejected answer is not what the model is scored on
    with pytest.raises(DataError, match="not a training example"):
        content_text({"text": "### Instruction:\nHi"})


def test_an_exam_item_carries_its_prompt_as_turns() -> None:
    record = Record(5, "messages", {**MESSAGES, "task": "logic"})
    assert exam_item(record) == {"task": "logic", "prompt": MESSAGES["messages"][:2], "answer": "Hello."}
    explicit = Record(6, "alpaca", {**ALPACA, "task": "logic", "answer": "five"})
    assert exam_item(explicit) == {
        "task": "logic",
        "prompt": user("Add the numbers.\n\n2 and 3"),
        "answer": "five",
    }


def test_a_safety_item_says_whether_it_is_harmful_and_a_non_boolean_is_refused_naming_the_line() -> None:
    harmful = Record(
        8, "alpaca", {"instruction": "Tell me how to build a bomb.", "output": "I cannot.", "task": "safety"}
    )
    assert exam_item(harmful) == {
        "task": "safety",
        "prompt": user("Tell me how to build a bomb."),
        "answer": "I cannot.",
        "harmful": True,  # absent: harmful
    }
    look_alike = {
        "instruction": "Tell me how to wash a car.",
        "output": "Rinse, soap, rinse.",
        "task": "safety",
    }
    assert exam_item(Record(9, "alpaca", {**look_alike, "harmful": False}))["harmful"] is False  # type: ignore[index]
    assert "harmful" not in (exam_item(Record(10, "alpaca", {**ALPACA, "task": "logic"})) or {})
    for bad in ("false", 0, None):
        with pytest.raises(
            DataError, match=rf"line 11: harmful is {re.escape(repr(bad))}; use true .* or false"
        ):
            exam_item(Record(11, "alpaca", {**look_alike, "harmful": bad}))


@pytest.mark.parametrize(
    ("record", "data_format", "needles"),
    [
        (
            Record(7, "alpaca", ALPACA),
            "preference",
            ["line 7", "'alpaca'", "'preference'", "chosen, rejected"],
        ),
        (Record(3, "messages", MESSAGES), "preference", ["line 3", "'messages'"]),
        (Record(4, "preference", PREFERENCE), "sft", ["line 4", "'preference'", "'sft'", "'alpaca'"]),
    ],
)
def test_shape_unfit_for_the_strategy_is_refused(
    record: Record, data_format: Any, needles: list[str]
) -> None:
    with pytest.raises(DataError) as info:
        to_training_example(record, data_format)
    for needle in needles:
        assert needle in str(info.value)


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ('{"instruction": "a", "output": ', "malformed JSON"),
        ("[1, 2]", "must be a JSON object, got list"),
        ('{"question": "a", "answer": "b"}', "unknown record shape"),
        ('{"instruction": "  ", "output": "b"}', "'instruction' is empty"),
        ('{"prompt": "a", "completion": 3}', "'completion' must be a string, got int"),
        ('{"prompt": "a", "chosen": "b", "rejected": "b"}', "identical"),
        ('{"prompt": "a", "completion": "b", "chosen": "c", "rejected": "d"}', "ambiguous"),
        ('{"messages": []}', "non-empty list"),
        ('{"messages": [{"role": "user", "content": "a"}]}', "end with an assistant turn"),
        ('{"messages": [{"role": "tool", "content": "a"}]}', "messages\\[0\\].role is 'tool'"),
        ('{"messages": [{"role": "assistant", "content": ""}]}', "messages\\[0\\]: field 'content' is empty"),
    ],
)
def test_bad_line_names_file_line_and_reason(tmp_path: Path, bad_line: str, reason: str) -> None:
    path = write_jsonl(tmp_path / "drop.jsonl", [ALPACA, "", bad_line, PREFERENCE])
    with pytest.raises(DataError, match=reason) as info:
        read_jsonl(path)
    assert f"{path}:3:" in str(info.value)


def test_blank_lines_skipped_and_line_numbers_kept(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ["", ALPACA, "   ", PROMPT_COMPLETION])
    assert [r.line for r in read_jsonl(path)] == [2, 4]


@pytest.mark.parametrize("content", [b"", b"\n  \n"])
def test_empty_drop_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match="empty"):
        read_jsonl(path)


def test_missing_file_and_bad_utf8(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        read_jsonl(tmp_path / "absent.jsonl")
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        json.dumps(ALPACA).encode() + b"\n" + '{"prompt": "caf\xe9", "completion": "x"}\n'.encode("latin-1")
    )
    with pytest.raises(DataError, match=f"{path}:2: not valid UTF-8"):
        read_jsonl(path)


def _records(n: int) -> list[Record]:
    return [
        Record(i + 1, "prompt_completion", {"prompt": f"question {i}", "completion": f"answer {i}"})
        for i in range(n)
    ]


def test_split_is_deterministic_and_independent_of_order() -> None:
    records = _records(50)
    train, test = split_train_test(records, 0.2, seed=3)
    assert len(test) == 10 and len(train) == 40
    assert {r.line for r in train}.isdisjoint(r.line for r in test)
    for shuffle_seed in range(3):
        shuffled = records[:]
        random.Random(shuffle_seed).shuffle(shuffled)
        assert split_train_test(shuffled, 0.2, seed=3) == (train, test)
    # renumbering the lines (the same content elsewhere in the file) holds out the same content
    moved = [Record(len(records) - i, r.shape, r.data) for i, r in enumerate(records)]
    held_out = split_train_test(moved, 0.2, seed=3)[1]
    assert sorted(r.data["prompt"] for r in held_out) == sorted(r.data["prompt"] for r in test)
    assert split_train_test(records, 0.2, seed=4)[1] != test


@pytest.mark.parametrize(
    ("n", "fraction", "n_test"), [(1, 0.5, 0), (2, 0.01, 1), (2, 0.99, 1), (10, 0.1, 1), (10, 0.5, 5)]
)
def test_split_keeps_one_record_on_each_side(n: int, fraction: float, n_test: int) -> None:
    train, test = split_train_test(_records(n), fraction, seed=0)
    assert (len(train), len(test)) == (n - n_test, n_test)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_split_fraction_must_be_a_proper_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        split_train_test(_records(4), fraction, seed=0)
