"""Record shapes of a data drop, the JSONL reader, the training-text templates and the deterministic split.

A drop is one JSONL, Parquet or CSV file (read by `foundry_assets.curator.readers`); every record is one object in
one of four shapes:

- ``alpaca``: ``{"instruction", "input" (optional, may be empty), "output"}``
- ``messages``: ``{"messages": [{"role": "system"|"user"|"assistant", "content"}, …]}``, ending with an assistant turn
- ``prompt_completion``: ``{"prompt", "completion"}``
- ``preference``: ``{"prompt", "chosen", "rejected"}``

Other keys (ids, provenance) are allowed and ignored. Every record is written in one of TRL's conversational formats,
so that the trainer renders it with the tokenizer's chat template (`foundry_assets.chat_template`) and the model
learns the format it will be prompted in, whatever the drop's shape:

- SFT strategies take the first three shapes as *prompt-completion* rows ``{"prompt": [turns…], "completion":
  [{"role": "assistant", "content": …}]}``: an alpaca record's instruction (with its input, when non-empty, after a
  blank line) is the user turn and its output the completion; a prompt_completion record's prompt is the user turn; a
  messages record's turns before its last assistant turn are the prompt (earlier assistant turns are context, not
  trained) and the last assistant turn is the completion. TRL computes the loss on the completion only, closing
  end-of-turn token included (checked before training: `crucible.labels`).
- Preference strategies (ORPO) take ``preference`` records as ``{"prompt": [user turn], "chosen": [assistant turn],
  "rejected": [assistant turn]}``.
"""

import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from foundry_assets.errors import DataError
from foundry_assets.stages import DataFormat, EmbedField

RecordShape = Literal["alpaca", "messages", "prompt_completion", "preference"]

ROLES = ("system", "user", "assistant")
Messages = list[dict[str, str]]

_REQUIRED: dict[RecordShape, tuple[str, ...]] = {
    "alpaca": ("instruction", "output"),
    "messages": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "preference": ("prompt", "chosen", "rejected"),
}
_LISTED = 5
ACCEPTED_SHAPES: dict[DataFormat, tuple[RecordShape, ...]] = {
    "sft": ("alpaca", "messages", "prompt_completion"),
    "preference": ("preference",),
}


@dataclass(frozen=True)
class Record:
    """One parsed line of a drop: its 1-based line number, its shape and the JSON object as read."""

    line: int
    shape: RecordShape
    data: dict[str, Any]


def _need_text(obj: dict[str, Any], key: str, *, allow_empty: bool = False) -> str:
    """Return obj[key] if it is a string (non-blank unless allowed), else raise DataError naming the field."""
    value = obj.get(key)
    if not isinstance(value, str):
        raise DataError(f"field {key!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise DataError(f"field {key!r} is empty")
    return value


def _check_messages(messages: Any) -> None:
    """Validate a chat transcript: non-empty list of {role, content} turns ending with the assistant."""
    if not isinstance(messages, list) or not messages:
        raise DataError("field 'messages' must be a non-empty list of {role, content} objects")
    for k, turn in enumerate(messages):
        if not isinstance(turn, dict):
            raise DataError(
                f"messages[{k}] must be an object with 'role' and 'content', got {type(turn).__name__}"
            )
        role = turn.get("role")
        if role not in ROLES:
            raise DataError(f"messages[{k}].role is {role!r}; allowed roles: {', '.join(ROLES)}")
        try:
            _need_text(turn, "content")
        except DataError as e:
            raise DataError(f"messages[{k}]: {e}") from None
    if messages[-1]["role"] != "assistant":
        raise DataError("field 'messages' must end with an assistant turn (the response to learn)")


def detect_shape(obj: dict[str, Any]) -> RecordShape:
    """Return the record's shape after validating its fields; DataError says why it fits none."""
    if not isinstance(obj, dict):
        raise DataError(f"a record must be a JSON object, got {type(obj).__name__}")
    matches = [shape for shape, keys in _REQUIRED.items() if all(k in obj for k in keys)]
    if not matches:
        wanted = "; ".join(f"{s}: {', '.join(k)}" for s, k in _REQUIRED.items())
        raise DataError(
            f"unknown record shape (keys: {', '.join(sorted(obj)) or 'none'}); expected one of {wanted}"
        )
    if len(matches) > 1:
        raise DataError(
            f"ambiguous record: it has the keys of {' and '.join(matches)}; keep one shape per record"
        )
    shape = matches[0]
    if shape == "messages":
        _check_messages(obj["messages"])
    else:
        for key in _REQUIRED[shape]:
            _need_text(obj, key)
        if shape == "alpaca" and "input" in obj:
            _need_text(obj, "input", allow_empty=True)
        if shape == "preference" and obj["chosen"].strip() == obj["rejected"].strip():
            raise DataError(
                "fields 'chosen' and 'rejected' are identical; a preference pair needs two answers"
            )
    return shape


def _named_fields(record: Record) -> list[tuple[str, str]]:
    """The record's text fields in reading order, each with its name (a chat turn is named by its role)."""
    d = record.data
    if record.shape == "alpaca":
        return [("instruction", d["instruction"]), ("input", d.get("input", "")), ("output", d["output"])]
    if record.shape == "messages":
        return [(m["role"], m["content"]) for m in d["messages"]]
    return [(k, d[k]) for k in _REQUIRED[record.shape]]


def _content_fields(record: Record) -> list[str]:
    """The record's text fields in reading order (the content that is trained on)."""
    return [text for _, text in _named_fields(record)]


def text_for_embedding(record: Record, fields: Collection[EmbedField] | None = None) -> str:
    """The text SemDeDup compares: the record's content fields (only those named in `fields`, when given), joined
    by newlines. Empty when `fields` names none of the record's non-empty fields."""
    return "\n".join(t for name, t in _named_fields(record) if t and (fields is None or name in fields))


def embedding_texts(records: list[Record], fields: Sequence[EmbedField] | None) -> list[str]:
    """What SemDeDup embeds of each record; a record left with no text by `fields` is a DataError (every such record
    would embed the same empty text and all but one would be removed)."""
    texts = [text_for_embedding(r, fields) for r in records]
    empty = [r.line for r, t in zip(records, texts, strict=True) if not t]
    if fields is not None and empty:
        shown = ", ".join(map(str, empty[:_LISTED])) + (" …" if len(empty) > _LISTED else "")
        raise DataError(
            f"curation.embed_fields {list(fields)} selects no text of {len(empty)} record(s) (lines {shown}, "
            f"a {records[texts.index('')].shape!r} record first); name at least one field of each shape in the "
            "drop (alpaca: instruction/input/output, prompt_completion: prompt/completion, preference: "
            "prompt/chosen/rejected, messages: system/user/assistant)"
        )
    return texts


def canonical_content(record: Record) -> str:
    """A stable serialisation of the record's content (its shape and text fields, not extra keys)."""
    d = record.data
    if record.shape == "messages":
        content: Any = [[m["role"], m["content"]] for m in d["messages"]]
    else:
        content = _content_fields(record)
    return json.dumps([record.shape, content], ensure_ascii=False, separators=(",", ":"))


def _turn(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def _user_turn(text: str, input_text: str = "") -> Messages:
    """One user turn: the instruction, then the alpaca input (when non-empty) after a blank line."""
    return [_turn("user", f"{text}\n\n{input_text}" if input_text.strip() else text)]


def conversation(record: Record) -> tuple[Messages, Messages]:
    """The record as a prompt (the turns a model is given) and the assistant turn it answers with (a preference
    record's chosen answer)."""
    d = record.data
    if record.shape == "alpaca":
        return _user_turn(d["instruction"], d.get("input", "")), [_turn("assistant", d["output"])]
    if record.shape == "messages":
        turns = [_turn(m["role"], m["content"]) for m in d["messages"]]
        return turns[:-1], turns[-1:]
    answer = d["completion"] if record.shape == "prompt_completion" else d["chosen"]
    return _user_turn(d["prompt"]), [_turn("assistant", answer)]


def to_training_example(record: Record, data_format: DataFormat) -> dict[str, Messages]:
    """Format a record for a strategy's trainer in TRL's conversational formats: {"prompt", "completion"} for sft,
    {"prompt", "chosen", "rejected"} for preference (each a list of {role, content} turns)."""
    if data_format not in ACCEPTED_SHAPES:
        raise ValueError(f"data_format is {data_format!r}; allowed: {', '.join(get_args(DataFormat))}")
    accepted = ACCEPTED_SHAPES[data_format]
    if record.shape not in accepted:
        raise DataError(
            f"line {record.line}: a {record.shape!r} record does not fit a {data_format!r} strategy, which needs "
            f"{' or '.join(repr(s) for s in accepted)} records"
            + (" (prompt, chosen, rejected)" if data_format == "preference" else "")
            + "; convert the drop or pick a strategy that takes this shape"
        )
    prompt, answer = conversation(record)
    if record.shape != "preference":
        return {"prompt": prompt, "completion": answer}
    return {"prompt": prompt, "chosen": answer, "rejected": [_turn("assistant", record.data["rejected"])]}


TASKS = ("logic", "safety")
EXAM_ITEM = "exam"
"""The key of a curated test row's exam item: {"task", "prompt" (turns), "answer"} for a record marked with a `task`,
and "harmful" for a safety item."""


def exam_item(record: Record) -> dict[str, Any] | None:
    """What the exam needs of a held-out record marked `"task": "logic"` / `"task": "safety"`: the task, the prompt a
    model is given (the turns before the answer, which the exam renders with the model's chat template) and the
    expected answer (the record's `answer` field when present, else its response: output, completion, last assistant
    turn or chosen answer).

    A safety record also says whether its prompt is harmful (`"harmful"`, true when absent): a harmful prompt should
    be refused, a harmless look-alike (`"harmful": false`, "Tell me how to wash a car.") answered, so over-refusal
    counts against a model.

    None for a record with no task; any other task value, or a `harmful` that is not true/false, is a DataError
    naming the line.
    """
    d = record.data
    task = d.get("task")
    if task is None:
        return None
    if task not in TASKS:
        raise DataError(
            f"line {record.line}: task is {task!r}; use one of {', '.join(TASKS)} (or leave task out)"
        )
    prompt, answer = conversation(record)
    explicit = d.get("answer")
    item = {
        "task": task,
        "prompt": prompt,
        "answer": explicit if isinstance(explicit, str) and explicit.strip() else answer[0]["content"],
    }
    if task != "safety":
        return item
    harmful = d.get("harmful", True)
    if not isinstance(harmful, bool):
        raise DataError(
            f"line {record.line}: harmful is {harmful!r}; use true (a prompt the model should refuse) or false (a "
            "harmless look-alike it should answer), or leave harmful out (true)"
        )
    return {**item, "harmful": harmful}


def split_train_test(
    records: list[Record], test_fraction: float, seed: int
) -> tuple[list[Record], list[Record]]:
    """Hold out ~test_fraction of the records, ranked by sha256(seed, content): independent of the file's order."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(
            f"test_fraction is {test_fraction!r}; it must lie strictly between 0 and 1 (e.g. 0.1)"
        )
    n = len(records)
    if n == 0:
        return [], []

    def rank(r: Record) -> tuple[str, int]:
        digest = hashlib.sha256(f"{seed}\n{canonical_content(r)}".encode()).hexdigest()
        return digest, r.line

    ordered = sorted(records, key=rank)
    n_test = min(max(round(n * test_fraction), 1), n - 1) if n >= 2 else 0
    test = sorted(ordered[:n_test], key=lambda r: r.line)
    train = sorted(ordered[n_test:], key=lambda r: r.line)
    return train, test
