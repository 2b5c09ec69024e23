"""The model card's markdown body, one function per section, and what the weights folder says about prompting.

Every section is built from typed inputs (the manifest, the exam report's rows, the lot, the prompt format) and holds
no timestamp and no node path, so the same job always renders the same bytes (`card.py` assembles them).
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry_assets.errors import PublishError
from foundry_assets.examiner.report import MetricRow, fmt
from foundry_assets.intake.lot import LotNumber
from foundry_assets.manifest import TrainingManifest

CHAT_TEMPLATE_FILE = "chat_template.jinja"


@dataclass(frozen=True)
class PromptFormat:
    """The chat template shipped with the weights (the one training rendered records with) and the token that ends
    an answer, as the weights folder states them."""

    template: str | None
    source: str | None
    """The file the template was read from: chat_template.jinja or tokenizer_config.json."""
    eos_token: str | None
    eos_token_ids: list[int]
    """generation_config.json's eos_token_id: where `generate` stops."""
    ships_tokenizer: bool
    """Whether the folder holds a loadable tokenizer (tokenizer.json or a SentencePiece tokenizer.model)."""


def _json_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PublishError(f"model card: {path.name} in the weights folder cannot be read: {e}") from e
    return data if isinstance(data, dict) else {}


def prompt_format(weights: Path) -> PromptFormat:
    """What the weights folder says about prompting: chat_template.jinja (transformers' own file) or
    tokenizer_config.json's `chat_template` (a string, or a list of named templates: `default` is the chat one)."""
    tokenizer = _json_file(weights / "tokenizer_config.json")
    generation = _json_file(weights / "generation_config.json")
    template, source = None, None
    if (weights / CHAT_TEMPLATE_FILE).is_file():
        template, source = (weights / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8"), CHAT_TEMPLATE_FILE
    elif tokenizer.get("chat_template"):
        named = tokenizer["chat_template"]
        if isinstance(named, list):
            named = next((t.get("template") for t in named if t.get("name") == "default"), None)
        template, source = (str(named), "tokenizer_config.json") if named else (None, None)
    eos = tokenizer.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    ids = generation.get("eos_token_id")
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    ships = any((weights / name).is_file() for name in ("tokenizer.json", "tokenizer.model"))
    return PromptFormat(template, source, str(eos) if eos else None, ids, ships)


def hub_base(base_model: str) -> str | None:
    """The base model as the hub names it, or None for a folder on the training node (never published as a path)."""
    local = base_model.startswith((".", "~", "/")) or base_model.count("/") > 1 or "\\" in base_model
    return None if local else base_model


def metric_rows(exam: Mapping[str, Any]) -> list[MetricRow]:
    """The exam report's metric rows, typed as the examiner wrote them."""
    return [MetricRow(**row) for row in exam.get("metrics") or []]


def _cell(value: Any) -> str:
    """A markdown table cell: numbers as the exam report prints them, pipes escaped."""
    text = fmt(value) if isinstance(value, float) or value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def what_section(manifest: TrainingManifest, kind: str) -> str:
    """One paragraph: what the tag holds and how it came to be."""
    base, method = f"`{base_name(manifest)}`", manifest.method_config.type.upper()
    others = len(manifest.merge.sources)
    if kind == "adapter":
        text = f"A {method} adapter (PEFT) of {base}, trained by coreason-model-foundry."
        if others:
            text += (
                f" The exam below judged the DARE-TIES merge of this adapter with {others} other adapter(s) "
                "(the job's merged model), not this adapter alone."
            )
        return text
    if not others:
        return (
            f"{base} with this job's {method} adapter folded into its weights: a merged model that transformers "
            "loads without PEFT, trained by coreason-model-foundry."
        )
    if manifest.merge.include_own_adapter:
        return f"A DARE-TIES merge (mergekit) of this job's {method} adapter and {others} other adapter(s) into {base}."
    return (
        f"A DARE-TIES merge (mergekit) of {others} adapter(s) into {base}. A merge-only job "
        "(`merge.include_own_adapter: false`): it trained nothing itself."
    )


def recipe_section(manifest: TrainingManifest, trained: Mapping[str, Any] | None = None) -> list[str]:
    """How the job's adapter was trained (with the backend and device its `adapter_saved` record names, when given);
    a merge-only job says that it trained nothing."""
    lines = ["## Training", ""]
    if not manifest.merge.include_own_adapter:
        return [
            *lines,
            "No training: this merge-only job trained no adapter, so no steps, rank or learning rate apply. The "
            "merged adapters are listed below, each with the job and lot it came from.",
            "",
        ]
    method, compute = manifest.method_config, manifest.compute
    rows: list[list[Any]] = [
        ["method", method.type],
        ["rank / alpha", f"{method.rank} / {method.alpha or method.rank}"],
        ["dropout", f"{method.dropout:g}"],
        ["learning rate", f"{method.learning_rate:g}"],
        ["steps", method.max_steps],
        ["max sequence length", method.max_seq_length],
        ["batch", _batch(method.batching, method.token_budget, compute.batch_size, compute.grad_accum)],
        ["seed", method.seed],
    ]
    rows += [["ORPO beta", f"{method.orpo_beta:g}"]] if method.type == "orpo" else []
    if trained and trained.get("backend"):
        stack = "Unsloth" if trained["backend"] == "unsloth" else "PEFT + TRL, without Unsloth"
        rows.append(["trained with", f"{stack} on {trained.get('device_name') or trained.get('device')}"])
    return lines + _table(["", ""], rows) + [""]


def _batch(batching: str, token_budget: int | None, batch_size: int, grad_accum: int) -> str:
    """A micro-batch and the optimizer step it makes: examples, or a token budget (`method_config.batching`)."""
    if batching == "examples":
        return f"{batch_size} × {grad_accum} gradient accumulation"
    return f"{batching}, up to {token_budget:,} tokens × {grad_accum} gradient accumulation"


def merge_section(manifest: TrainingManifest, exam: Mapping[str, Any]) -> list[str]:
    """The DARE-TIES recipe: each source (a job with its lot, or an adapter folder by name), weight and density."""
    merge = manifest.merge
    if not merge.sources:
        return []
    lots = {str(s.get("job_id")): str(s.get("lot_number", "")) for s in exam.get("source_jobs") or []}
    own = [["this job's adapter", "—", f"{merge.weight:g}", f"{merge.density:g}"]]
    rows = own if merge.include_own_adapter else []
    for source in merge.sources:
        name = f"job `{source.job}`" if source.job else f"adapter folder `{Path(source.adapter or '').name}`"
        lot = lots.get(source.job or "", "")
        rows.append([name, f"`{lot[:12]}…`" if lot else "—", f"{source.weight:g}", f"{source.density:g}"])
    return [
        "## Merge",
        "",
        *_table(["source", "lot", "weight", "density"], rows),
        "",
        f"DARE-TIES through mergekit, normalize: {str(merge.normalize).lower()}, seed {merge.seed}.",
        "",
    ]


def _release(row: MetricRow) -> str:
    """Whether the metric decided the release: the examiner marks each row pass/FAIL (gated), 'not gated' (reported
    only) or 'skipped' (no items), from `exam.gate` (the contamination check always gates)."""
    if row.result == "not gated":
        return "reported"
    if row.result == "skipped":
        return "skipped (no items)"
    return f"gated: {'pass' if row.passed else 'FAIL'}"


def exam_section(exam: Mapping[str, Any]) -> list[str]:
    """The exam's verdict, every metric against the base model with whether it gated, contamination and reasons."""
    verdict = "passed" if exam.get("passed") else "FAILED"
    gate = ", ".join(f"`{name}`" for name in exam.get("gate") or []) or "no metric"
    lines = [
        "## Exam",
        "",
        f"Verdict: **{verdict}**. {exam.get('items_scored', 0)} held-out items scored on {exam.get('device', '?')} "
        f"in {exam.get('dtype', '?')}, the base model (baseline) and this model (candidate) on the same items. "
        f"The release was gated on {gate} and the contamination check; other metrics are reported only.",
        "",
    ]
    champion = exam.get("champion")
    if champion:
        lines[-1:] = [f"Every gated metric also had to be at least as good as the {champion['label']}.", ""]
        rows = [
            [r.name, r.baseline, r.champion, r.candidate, r.required, r.champion_required or "—", _release(r)]
            for r in metric_rows(exam)
        ]
        header = [
            "metric",
            "baseline",
            "champion",
            "candidate",
            "required",
            "required vs champion",
            "release",
        ]
        lines += _table(header, rows)
    else:
        rows = [[r.name, r.baseline, r.candidate, r.required, _release(r)] for r in metric_rows(exam)]
        lines += _table(["metric", "baseline", "candidate", "required", "release"], rows)
    lines += _sources_lines(exam)
    contamination = exam.get("contamination") or {}
    if contamination:
        found, items = len(contamination.get("contaminated") or []), contamination.get("test_items", "?")
        lines += [
            "",
            f"Contamination: {found} of {items} test items (share {_cell(contamination.get('fraction'))}, allowed "
            f"{_cell(contamination.get('max_allowed'))}) share a {contamination.get('ngram_n', '?')}-gram with the "
            "training data.",
        ]
    reasons = exam.get("reasons") or []
    return lines + (["", "Reasons:", *(f"- {_cell(r)}" for r in reasons)] if reasons else []) + [""]


def _sources_lines(exam: Mapping[str, Any]) -> list[str]:
    """A merge of source jobs: each source's adapter scored on the base model and what each rate had to keep."""
    jobs = [str(source["job_id"]) for source in exam.get("sources") or []]
    if not jobs:
        return []
    share = exam.get("source_retention") or 0.0
    kept = (
        f"every gated rate had to keep {share * 100:g}% of the best source's"
        if share
        else "their scores were reported, not compared (exam.source_retention 0)"
    )
    rows = [
        [r.name, *(r.sources.get(job) for job in jobs), r.candidate, r.retention_required or "—"]
        for r in metric_rows(exam)
        if r.sources
    ]
    return [
        "",
        f"The merge sources (each source job's adapter on the base model) sat the same exam; {kept}:",
        "",
        *_table(["metric", *(f"source {job}" for job in jobs), "candidate", "required vs sources"], rows),
    ]


def _fence(text: str, language: str) -> list[str]:
    """`text` in a code block whose fence is longer than any backtick run inside it."""
    longest, run = 0, 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{language}", text.rstrip("\n"), fence]


def prompt_section(prompt: PromptFormat) -> list[str]:
    """The chat template shipped with the weights and the token that ends an answer."""
    lines = ["## Prompt format", ""]
    if prompt.template is None:
        lines.append(
            "No chat template ships with the weights: prompt the model as its base model's tokenizer does."
        )
    else:
        lines += [
            f"Prompts go through the chat template shipped with the weights (`{prompt.source}`), the format the "
            "foundry trains in; `tokenizer.apply_chat_template(messages, add_generation_prompt=True)` applies it, "
            "and so do vLLM's and TGI's chat endpoints.",
            "",
            *_fence(prompt.template, "jinja"),
        ]
    ends = []
    if prompt.eos_token:
        ends.append(f"an answer ends with `{prompt.eos_token}` (tokenizer_config.json's eos_token)")
    if prompt.eos_token_ids:
        ids = ", ".join(str(i) for i in prompt.eos_token_ids)
        ends.append(f"`generate` stops at token id {ids} (generation_config.json's eos_token_id)")
    return lines + (["", "End of turn: " + "; ".join(ends) + "."] if ends else []) + [""]


def base_name(manifest: TrainingManifest) -> str:
    """The base model as a reader can name it: the hub name, or a local folder's name (never the node's path)."""
    return hub_base(manifest.base_model) or Path(manifest.base_model.rstrip("/\\")).name


def usage_section(manifest: TrainingManifest, kind: str, prompt: PromptFormat) -> list[str]:
    """A snippet that loads the tag from its root and generates through the shipped chat template."""
    adapter = kind == "adapter"
    lines = ["from peft import PeftModel"] if adapter else []
    lines += ["from transformers import AutoModelForCausalLM, AutoTokenizer", ""]
    tag = manifest.publish_target.tag
    lines.append(
        f'TAG = "{tag}"  # the tag\'s folder (`publisher.fetch_artifact` or a download), or its hub repository'
    )
    if adapter or not prompt.ships_tokenizer:
        local = hub_base(manifest.base_model) is None
        note = "  # a folder on the training node: point this at your copy of it" if local else ""
        lines.append(f'BASE = "{base_name(manifest)}"{note}')
    if adapter:
        lines.append("model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), TAG)")
    else:
        lines.append("model = AutoModelForCausalLM.from_pretrained(TAG)")
    lines.append(f"tokenizer = AutoTokenizer.from_pretrained({'TAG' if prompt.ships_tokenizer else 'BASE'})")
    if prompt.template is None:
        lines.append('inputs = tokenizer("Hello!", return_tensors="pt")')
    else:
        lines += [
            'messages = [{"role": "user", "content": "Hello!"}]',
            "inputs = tokenizer.apply_chat_template(",
            '    messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"',
            ")",
        ]
    lines += [
        "output = model.generate(**inputs, max_new_tokens=64)",
        'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))',
    ]
    return ["## Usage", "", *_fence("\n".join(lines), "python"), ""]


def overview_section(manifest: TrainingManifest, kind: str, lot: LotNumber) -> list[str]:
    license_id = manifest.publish_target.license
    note = " (declares none: set `publish_target.license` to the base model's, e.g. llama3.1)" * (
        license_id == "other"
    )
    artifact = "adapter (PEFT)" if kind == "adapter" else "merged model (transformers)"
    rows = [
        ["base model", f"`{base_name(manifest)}`"],
        ["artifact", artifact],
        ["license", f"{license_id}{note}"],
        ["lot number", f"`{lot.lot_number}`"],
        ["dataset sha256", f"`{lot.dataset_sha256}`"],
        ["manifest sha256", f"`{lot.manifest_sha256}`"],
    ]
    return [
        *_table(["", ""], rows),
        "",
        "The lot number is the SHA256 of the two hashes after it (the data drop's bytes, the manifest's canonical "
        "JSON), fixed before training.",
        "",
    ]
