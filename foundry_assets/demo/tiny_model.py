"""A tiny random-initialised Llama and its byte-level BPE tokenizer, built offline for tests and the demo.

Real model names are loaded by the crucible as usual; this model exists so the whole loop runs on a CPU with no hub.
"""

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundry_assets.fsio import build_dir

if TYPE_CHECKING:
    from foundry_assets.crucible.vram import Architecture

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

_DEFAULT_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Question: what is two plus two? Answer: four.",
    "Instruction: summarise the text. Response: a short summary.",
    "I cannot help with that request because it could cause harm.",
    "Zero one two three four five six seven eight nine ten eleven twelve.",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?'\"()[]{}<>|/\\-_=+*&^%$#@~`",
]


def build_tokenizer(corpus: Iterable[str] = (), *, vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer trained offline on `corpus`, with bos/eos/pad and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([*_DEFAULT_CORPUS, *corpus], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=8192,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def llama_config(tokenizer: Any, **shape: Any) -> Any:
    """A LlamaConfig of `shape` (hidden_size, num_hidden_layers, …) whose special tokens are the tokenizer's; the
    vocabulary is the tokenizer's and embeddings are untied unless `shape` says otherwise."""
    from transformers import LlamaConfig

    return LlamaConfig(
        **{"vocab_size": len(tokenizer), "tie_word_embeddings": False, **shape},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_llama(
    out_dir: str | Path,
    *,
    corpus: Iterable[str] = (),
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    seed: int = 0,
) -> Path:
    """Write a random-init Llama (safetensors) and its tokenizer to `out_dir`; return the folder.

    Idempotent: a folder that already holds a built model is returned as it is.
    """
    out = Path(out_dir)
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = build_tokenizer(corpus, vocab_size=vocab_size)
    torch.manual_seed(seed)
    config = llama_config(
        tokenizer,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    )
    model = LlamaForCausalLM(config)

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "foundry_tiny_model.json").write_text(json.dumps({"seed": seed, "vocab_size": len(tokenizer)}))

    build_dir(out, save)
    return out


def build_random_llama(
    out_dir: str | Path, architecture: "Architecture", *, corpus: Iterable[str] = (), seed: int = 0
) -> Path:
    """A random-init Llama of a real architecture (e.g. Llama-3.2-1B's shape) in bf16, for GPU tests and benchmarks.

    Built where it runs, so no weights are downloaded; the tokenizer is a small byte-level BPE whose ids all fall
    inside the model's vocabulary.
    """
    out = Path(out_dir)
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = build_tokenizer(corpus, vocab_size=4096)
    torch.manual_seed(seed)
    config = llama_config(
        tokenizer,
        vocab_size=architecture.vocab_size,
        hidden_size=architecture.hidden_size,
        intermediate_size=architecture.intermediate_size,
        num_hidden_layers=architecture.num_layers,
        num_attention_heads=architecture.num_heads,
        num_key_value_heads=architecture.num_kv_heads,
        max_position_embeddings=8192,
        tie_word_embeddings=architecture.tie_word_embeddings,
    )
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).bfloat16()
    build_dir(
        out, lambda tmp: (model.save_pretrained(tmp, safe_serialization=True), tokenizer.save_pretrained(tmp))
    )
    return out  # the model is freed on return
