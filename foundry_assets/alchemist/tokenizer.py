"""The tokenizer and generation config a merged model ships: the chat template it was trained with, and a stop at
that template's end-of-turn token.

mergekit (and a copy from the base folder) would give the merged model the BASE tokenizer, whose chat template may not
be the one the adapters trained with (a base without one trains with `chat_template.DEFAULT_CHAT_TEMPLATE`); the
adapters' tokenizer files, saved by the crucible, are copied instead. Both run before the merged folder is hashed, so
the recorded hashes name what is published.
"""

import json
import shutil
from pathlib import Path

from foundry_assets.alchemist.checkpoint import BaseCheckpoint
from foundry_assets.alchemist.refs import AdapterRef, read_json
from foundry_assets.errors import MergeError

TOKENIZER_FILES = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer.model",
    "added_tokens.json",
    "merges.txt",
    "vocab.json",
    "chat_template.jinja",
    "chat_template.json",
)


def copy_side_files(
    donor: Path, out: Path, names: tuple[str, ...] = (*TOKENIZER_FILES, "generation_config.json")
) -> None:
    for name in names:
        if (donor / name).is_file():
            shutil.copy2(donor / name, out / name)


def _chat_template_of(folder: Path) -> str | None:
    """The chat template saved in a tokenizer folder (transformers 5 writes chat_template.jinja)."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    config = (
        read_json(folder / "tokenizer_config.json", "the adapter's tokenizer")
        if (folder / "tokenizer_config.json").is_file()
        else {}
    )
    template = config.get("chat_template")
    return template if isinstance(template, str) else None


def tokenizer_donor(base: BaseCheckpoint, adapters: list[AdapterRef]) -> Path:
    """The folder whose tokenizer the merged model ships: the adapters' (saved by the crucible with the chat template
    they trained with), never the base's, whose template may differ; adapters trained with different templates
    cannot be merged into one model that answers in both formats."""
    saved = [Path(a.path) for a in adapters if (Path(a.path) / "tokenizer_config.json").is_file()]
    templates = {str(folder): _chat_template_of(folder) for folder in saved}
    if len(set(templates.values())) > 1:
        raise MergeError(
            f"the adapters were trained with different chat templates ({', '.join(templates)}); merge adapters "
            "trained on the same base tokenizer and template"
        )
    return saved[0] if saved else base.folder


def stop_at_end_of_turn(out: Path) -> int | None:
    """Make generation stop at the template's end-of-turn token: add it to generation_config.json's eos_token_id when
    the template closes turns with a token other than those already listed. Returns that token's id."""
    from transformers import AutoTokenizer

    from foundry_assets.chat_template import end_of_turn

    path = out / "generation_config.json"
    if not (out / "tokenizer_config.json").is_file() or not path.is_file():
        return None  # a base saved without a tokenizer (a weights-only folder): nothing to read the template from
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    turn = end_of_turn(tokenizer) if tokenizer.chat_template else None
    if turn is None:
        return None
    config = read_json(path, "the merged model's generation config")
    eos = config.get("eos_token_id")
    listed = eos if isinstance(eos, list) else [] if eos is None else [eos]
    if turn.token_id not in listed:
        config["eos_token_id"] = [*listed, turn.token_id]
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return turn.token_id
