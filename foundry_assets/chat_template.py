"""The chat template a job trains with, ships with and is examined in: the base tokenizer's own, or a default.

Records are trained as conversations (TRL's prompt-completion and preference formats, `curator.formats`), so the
tokenizer's chat template decides the tokens the model learns. A base whose tokenizer has no chat template gets
`DEFAULT_CHAT_TEMPLATE` (set on the tokenizer before training, saved with the adapter and the merged model), a
ChatML-like template that closes every turn with the tokenizer's ``eos_token``: generation then stops where training
taught the model to stop. The end-of-turn token is found by rendering a probe conversation (`end_of_turn`), not by
trusting ``eos_token``: a template may close a turn with its own token (``<|im_end|>``, ``<|eot_id|>``).

Heavy libraries are not imported here: the functions take a loaded tokenizer.
"""

from dataclasses import dataclass
from typing import Any, Literal

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""The template of a base without one: ChatML's turn layout, each turn closed by the tokenizer's eos_token."""

TemplateSource = Literal["base", "default"]
Messages = list[dict[str, str]]

_PROBE_PROMPT: Messages = [{"role": "user", "content": "What is two plus two?"}]
_PROBE_ANSWER: Messages = [{"role": "assistant", "content": "Four."}]


def ensure_chat_template(tokenizer: Any) -> TemplateSource:
    """ "base" when the tokenizer has a chat template; otherwise set `DEFAULT_CHAT_TEMPLATE` on it and say "default"."""
    if tokenizer.chat_template:
        return "base"
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return "default"


def render_text(tokenizer: Any, messages: Messages, *, generation_prompt: bool) -> str:
    """The conversation as the template renders it (with the assistant header after it, for a prompt)."""
    return str(
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    )


def render_ids(tokenizer: Any, messages: Messages, *, generation_prompt: bool) -> list[int]:
    """`render_text`'s tokens, as `apply_chat_template(tokenize=True)` gives them (no special tokens added)."""
    text = render_text(tokenizer, messages, generation_prompt=generation_prompt)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` share: where a completion starts when `a` is its prompt (as TRL finds it)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def completion_ids(tokenizer: Any, prompt: Messages, completion: Messages) -> tuple[list[int], int]:
    """The whole conversation's tokens and the index of its completion's first token (the tokens trained on)."""
    full = render_ids(tokenizer, [*prompt, *completion], generation_prompt=False)
    return full, common_prefix(render_ids(tokenizer, prompt, generation_prompt=True), full)


@dataclass(frozen=True)
class EndOfTurn:
    """The token that closes an assistant turn under a template, and the tokens of the template's assistant header."""

    token: str
    token_id: int
    header_ids: tuple[int, ...]


def end_of_turn(tokenizer: Any) -> EndOfTurn | None:
    """Render a probe question and answer: the end-of-turn token is the eos_token when the template emits it after the
    answer, else the first special token it emits there; None when it emits neither (the model could never learn to
    stop)."""
    full, start = completion_ids(tokenizer, _PROBE_PROMPT, _PROBE_ANSWER)
    answer = full[start:]
    special = {*tokenizer.all_special_ids, *tokenizer.get_added_vocab().values()}
    found = tokenizer.eos_token_id if tokenizer.eos_token_id in answer else None
    found = found if found is not None else next((t for t in answer if t in special), None)
    if found is None:
        return None
    asked = render_ids(tokenizer, _PROBE_PROMPT, generation_prompt=True)
    header = asked[common_prefix(render_ids(tokenizer, _PROBE_PROMPT, generation_prompt=False), asked) :]
    return EndOfTurn(tokenizer.convert_ids_to_tokens(found), int(found), tuple(header))
