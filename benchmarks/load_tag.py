"""Load a published tag from its root the way a Hugging Face user does, and generate from it.

    python benchmarks/load_tag.py TAG_FOLDER [--base LOCAL_BASE] [--device cuda] [--max-new-tokens 32]

Uses only transformers, peft and huggingface_hub (no foundry code): an adapter tag (adapter_config.json at the root)
loads as `PeftModel.from_pretrained(base, TAG)` over `--base` (the node's copy of the card's base model; without it,
the adapter's `base_model_name_or_path`, i.e. a hub name), a merged tag as `AutoModelForCausalLM.from_pretrained(TAG)`.
The prompt is rendered with the tag's own chat template. Prints one JSON line: what loaded, in how long, the card's
metadata, and whether generation stopped at an end-of-turn token. `benchmarks/gpu_e2e.py --load-tags` runs it for
every published tag, in a fresh process each.
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def load(tag: Path, base: str | None, device: str) -> tuple[Any, Any, str]:
    """(model, tokenizer, how it was loaded) for the tag folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(str(tag))
    if (tag / "adapter_config.json").is_file():
        from peft import PeftModel

        config = json.loads((tag / "adapter_config.json").read_text(encoding="utf-8"))
        source = base or config["base_model_name_or_path"]
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, device_map=device)
        return PeftModel.from_pretrained(model, str(tag)), tokenizer, "PeftModel.from_pretrained(base, TAG)"
    model = AutoModelForCausalLM.from_pretrained(str(tag), dtype=dtype, device_map=device)
    return model, tokenizer, "AutoModelForCausalLM.from_pretrained(TAG)"


def card_facts(tag: Path) -> dict[str, Any]:
    from huggingface_hub import ModelCard

    data = ModelCard.load(tag / "README.md").data.to_dict()
    results = [
        {"metric": m["type"], "value": m["value"]}
        for entry in data.get("model-index", [])
        for result in entry.get("results", [])
        for m in result.get("metrics", [])
    ]
    keys = ("license", "base_model", "base_model_relation", "library_name", "pipeline_tag")
    return {**{k: data.get(k) for k in keys}, "model_index": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tag", type=Path)
    parser.add_argument("--base", help="local folder of the base model (adapter tags)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--prompt", default="What is 2 + 3?")
    args = parser.parse_args()
    import torch

    started = time.perf_counter()
    model, tokenizer, how = load(args.tag, args.base, args.device)
    load_s = time.perf_counter() - started
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": args.prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"].to(args.device)
    stops = model.generation_config.eos_token_id
    stops = set(stops if isinstance(stops, list) else [stops])
    started = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            ids, max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    gen_s = time.perf_counter() - started
    new = out[0, ids.shape[1] :].tolist()
    print(
        json.dumps(
            {
                "tag": args.tag.name,
                "loaded_as": how,
                "load_s": round(load_s, 1),
                "generate_s": round(gen_s, 2),
                "new_tokens": len(new),
                "stopped_at_eos": bool(new) and new[-1] in stops,
                "eos_token_ids": sorted(stops),
                "text": tokenizer.decode(new, skip_special_tokens=True)[:120],
                "card": card_facts(args.tag),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
