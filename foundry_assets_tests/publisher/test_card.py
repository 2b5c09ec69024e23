"""The tag's one model card: huggingface_hub parses it, its metadata and model-index match the manifest and the exam,
it tells an adapter, a folded model and a merge-only job apart, and its usage snippet runs against real weights."""

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import ModelCard

from foundry_assets.audit_events import Event
from foundry_assets.errors import ManifestError, PublishError
from foundry_assets.intake.lot import LotNumber
from foundry_assets.manifest import parse_manifest
from foundry_assets.publisher.card import lot_from_trail, write_model_card
from foundry_assets.publisher.card_body import prompt_format

BASE = "meta-llama/Llama-3.1-8B-Instruct"
LOT = LotNumber(dataset_sha256="cd" * 32, manifest_sha256="ef" * 32, lot_number="ab" * 32)
ADAPTER_JOB: dict[str, Any] = {
    "job_id": "safety-2025-01",
    "base_model": BASE,
    "method_config": {"type": "dora", "rank": 32, "learning_rate": 0.0001, "max_steps": 120},
    "publish_target": {"registry": "s3://models/prod", "tag": "v2.1.0", "license": "llama3.1"},
}
MERGE_ONLY_JOB: dict[str, Any] = {
    **ADAPTER_JOB,
    "job_id": "merge-2025-02",
    "merge": {
        "sources": [{"job": "logic-1"}, {"adapter": "/srv/node7/adapters/tone"}],
        "include_own_adapter": False,
    },
}
EXAM: dict[str, Any] = {
    "passed": True,
    "reasons": [],
    "gate": ["heldout_loss"],
    "items_scored": 40,
    "device": "cpu",
    "dtype": "float32",
    "lot_number": LOT.lot_number,
    "source_jobs": [{"job_id": "logic-1", "lot_number": "12" * 32}],
    "metrics": [
        {"name": "heldout_loss", "baseline": 2.5, "candidate": 1.25, "required": "< baseline − 0",
         "passed": True, "result": "pass", "items": 40},
        {"name": "logic_score", "baseline": 0.5, "candidate": 0.25, "required": "> baseline + 0 (not gated)",
         "passed": True, "result": "not gated", "items": 8},
        {"name": "safety_rate", "baseline": None, "candidate": None, "required": "no items: not gated",
         "passed": True, "result": "skipped", "items": 0},
        {"name": "contaminated_fraction", "baseline": None, "candidate": 0.0, "required": "≤ 0.0000",
         "passed": True, "result": "pass", "items": 40},
    ],
    "contamination": {"fraction": 0.0, "max_allowed": 0.0, "test_items": 40, "ngram_n": 13, "contaminated": []},
}  # fmt: skip


def _weights(folder: Path, *, template: str | None = "{{ messages }}") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|eot_id|>"}))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [128001, 128009]}))
    if template is not None:
        (folder / "chat_template.jinja").write_text(template)
    return folder


def _card(
    tmp_path: Path, manifest: dict[str, Any], kind: str, exam: dict[str, Any] = EXAM
) -> tuple[str, Any]:
    weights = _weights(tmp_path / "weights")
    path = write_model_card(tmp_path, manifest, exam, kind=kind, weights=weights, lot=LOT)
    return path.read_text(), ModelCard.load(path)


def _row(text: str, metric: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {metric} |"))


def test_an_adapter_card_has_the_hub_metadata_and_the_exam_as_model_index(tmp_path: Path) -> None:
    text, card = _card(tmp_path, ADAPTER_JOB, "adapter")
    data = card.data
    assert (data.license, data.base_model, data.base_model_relation) == ("llama3.1", BASE, "adapter")
    assert (data.library_name, data.pipeline_tag) == ("peft", "text-generation")
    assert data.tags == ["coreason-model-foundry", "dora"] and data.datasets is None
    candidates = {row["name"]: row["candidate"] for row in EXAM["metrics"] if row["candidate"] is not None}
    assert {r.metric_type: r.metric_value for r in data.eval_results} == candidates
    assert {(r.task_type, r.dataset_split, r.dataset_revision) for r in data.eval_results} == {
        ("text-generation", "test", LOT.dataset_sha256)
    }
    assert all(f"`{value}`" in text for value in (LOT.lot_number, LOT.dataset_sha256, LOT.manifest_sha256))
    assert "| rank / alpha | 32 / 32 |" in text and "| steps | 120 |" in text
    assert "PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), TAG)" in text
    assert f'BASE = "{BASE}"' in text and "add_generation_prompt=True" in text
    assert "sha256sum -c MANIFEST.sha256" in text and "s3://" not in text, "no registry address in the card"


def test_the_recipe_names_the_batching_that_trained(tmp_path: Path) -> None:
    text, _ = _card(tmp_path / "examples", ADAPTER_JOB, "adapter")
    assert _row(text, "batch") == "| batch | 4 × 4 gradient accumulation |"
    grouped = {**ADAPTER_JOB["method_config"], "batching": "length_grouped", "token_budget": 16384}
    text, _ = _card(tmp_path / "grouped", {**ADAPTER_JOB, "method_config": grouped}, "adapter")
    assert _row(text, "batch") == "| batch | length_grouped, up to 16,384 tokens × 4 gradient accumulation |"


def test_the_recipe_names_the_stack_and_device_the_trail_recorded(tmp_path: Path) -> None:
    weights = _weights(tmp_path / "weights")

    def recipe(
        trained: dict[str, Any] | None, kind: str = "adapter", job: dict[str, Any] = ADAPTER_JOB
    ) -> str:
        card = write_model_card(tmp_path, job, EXAM, kind=kind, weights=weights, lot=LOT, trained=trained)
        return card.read_text().split("## Training", 1)[1].split("\n## ", 1)[0]

    h200 = {"backend": "unsloth", "device": "cuda", "device_name": "NVIDIA H200"}
    assert "| trained with | Unsloth on NVIDIA H200 |" in recipe(h200)
    fallback = {"backend": "peft", "device": "cpu", "device_name": None}
    assert "| trained with | PEFT + TRL, without Unsloth on cpu |" in recipe(fallback)
    assert "trained with" not in recipe(None) and "trained with" not in recipe({"files": {}})
    assert "trained with" not in recipe(h200, "merged_model", MERGE_ONLY_JOB), (
        "a merge-only job trained nothing"
    )


def test_only_gated_metrics_are_shown_as_passing_the_release(tmp_path: Path) -> None:
    text, _ = _card(tmp_path, ADAPTER_JOB, "adapter")
    assert _row(text, "heldout_loss").endswith("| gated: pass |")
    assert _row(text, "contaminated_fraction").endswith("| gated: pass |")
    assert _row(text, "logic_score").endswith("| reported |"), "an ungated metric never reads 'pass'"
    assert _row(text, "safety_rate").endswith("| skipped (no items) |")
    assert "gated on `heldout_loss` and the contamination check" in text


def test_a_champion_exam_shows_the_champion_column_and_names_it(tmp_path: Path) -> None:
    label = "champion job 'safety-2024-12' (tag 'v2.0.0', lot 343434343434…)"
    loss = {**EXAM["metrics"][0], "champion": 1.5, "champion_required": "≤ 1.5000", "champion_result": "pass"}
    exam = {
        **EXAM,
        "champion": {"label": label, "lot_number": "34" * 32},
        "metrics": [loss, *EXAM["metrics"][1:]],
    }
    text, _ = _card(tmp_path, ADAPTER_JOB, "adapter", exam)
    assert f"at least as good as the {label}." in text
    assert "| metric | baseline | champion | candidate | required | required vs champion | release |" in text
    assert (
        _row(text, "heldout_loss")
        == "| heldout_loss | 2.5000 | 1.5000 | 1.2500 | < baseline − 0 | ≤ 1.5000 | gated: pass |"
    )
    assert (
        _row(text, "safety_rate")
        == "| safety_rate | — | — | — | no items: not gated | — | skipped (no items) |"
    )
    plain, _ = _card(tmp_path / "plain", ADAPTER_JOB, "adapter")
    assert "champion" not in plain, "without a champion the table is the base against the candidate"


def test_a_merge_of_source_jobs_shows_what_each_source_scored_and_what_the_merge_had_to_keep(
    tmp_path: Path,
) -> None:
    logic = {
        **EXAM["metrics"][1],
        "sources": {"logic-1": 0.75, "safety-1": 0.0},
        "retention_required": "≥ 0.6750 (90% of job 'logic-1') (not gated)",
        "retention_result": "not gated",
    }
    loss = {**EXAM["metrics"][0], "sources": {"logic-1": 1.5, "safety-1": 1.75}}
    sources = [
        {"job_id": job, "adapter_dir": f"/jobs/m/sources/{job}", "seconds": 1.0}
        for job in ("logic-1", "safety-1")
    ]
    exam = {
        **EXAM,
        "metrics": [loss, logic, *EXAM["metrics"][2:]],
        "sources": sources,
        "source_retention": 0.9,
    }
    text, _ = _card(tmp_path, MERGE_ONLY_JOB, "merged_model", exam)
    assert "sat the same exam; every gated rate had to keep 90% of the best source's:" in text
    assert "| metric | source logic-1 | source safety-1 | candidate | required vs sources |" in text
    rows = [line for line in text.splitlines() if line.startswith("| logic_score |")]
    assert (
        rows[-1] == "| logic_score | 0.7500 | 0.0000 | 0.2500 | ≥ 0.6750 (90% of job 'logic-1') (not gated) |"
    )
    assert [line for line in text.splitlines() if line.startswith("| heldout_loss |")][-1].endswith(
        "| 1.2500 | — |"
    )
    plain, _ = _card(tmp_path / "plain", MERGE_ONLY_JOB, "merged_model")
    assert "merge sources" not in plain and "source logic-1" not in plain


def test_a_merge_only_card_says_nothing_was_trained_and_loads_with_transformers(tmp_path: Path) -> None:
    text, card = _card(tmp_path, MERGE_ONLY_JOB, "merged_model")
    data = card.data
    assert (data.library_name, data.base_model, data.base_model_relation) == ("transformers", BASE, "merge")
    assert data.tags == ["coreason-model-foundry", "dare-ties"], "no training method: nothing was trained"
    assert "No training: this merge-only job trained no adapter, so no steps" in text
    assert "| steps |" not in text and "adapter (PEFT)" not in text and "PeftModel" not in text
    assert "| job `logic-1` | `121212121212…` | 1 | 0.5 |" in text
    assert "| adapter folder `tone` | — | 1 | 0.5 |" in text and "/srv/node7" not in text, "no node path"
    assert "model = AutoModelForCausalLM.from_pretrained(TAG)" in text and "BASE =" not in text


def test_a_folded_model_is_a_finetune_of_its_base(tmp_path: Path) -> None:
    manifest = {
        **ADAPTER_JOB,
        "publish_target": {**ADAPTER_JOB["publish_target"], "datasets": ["org/safety"]},
    }
    text, card = _card(tmp_path, manifest, "merged_model")
    assert (card.data.library_name, card.data.base_model_relation) == ("transformers", "finetune")
    assert card.data.datasets == ["org/safety"]
    assert {r.dataset_type for r in card.data.eval_results} == {"org/safety"}
    assert "with this job's DORA adapter folded into its weights" in text and "| steps | 120 |" in text


def test_the_card_is_the_same_bytes_for_the_same_job(tmp_path: Path) -> None:
    first, _ = _card(tmp_path / "a", ADAPTER_JOB, "adapter")
    again, _ = _card(tmp_path / "b", ADAPTER_JOB, "adapter")
    assert first == again, "a re-published tag must stay byte-identical"


def test_the_prompt_format_is_read_from_the_shipped_weights(tmp_path: Path) -> None:
    template = "{% for m in messages %}<|{{ m['role'] }}|>```{{ m['content'] }}<|eot_id|>{% endfor %}"
    weights = _weights(tmp_path / "w", template=template)
    text = write_model_card(tmp_path, ADAPTER_JOB, EXAM, kind="adapter", weights=weights, lot=LOT).read_text()
    assert f"````jinja\n{template}\n````" in text, "a fence longer than the template's own backticks"
    assert "ends with `<|eot_id|>`" in text and "stops at token id 128001, 128009" in text

    (weights / "chat_template.jinja").unlink()
    config = {"eos_token": {"content": "</s>"}, "chat_template": [{"name": "default", "template": "T"}]}
    (weights / "tokenizer_config.json").write_text(json.dumps(config))
    prompt = prompt_format(weights)
    assert (prompt.template, prompt.source, prompt.eos_token) == ("T", "tokenizer_config.json", "</s>")

    bare = tmp_path / "bare"
    bare.mkdir()
    text = write_model_card(tmp_path, ADAPTER_JOB, EXAM, kind="adapter", weights=bare, lot=LOT).read_text()
    assert "No chat template ships with the weights" in text
    assert "AutoTokenizer.from_pretrained(BASE)" in text, "no tokenizer in the tag: the base's"


def test_a_local_base_model_is_never_published_as_a_path(tmp_path: Path) -> None:
    text, card = _card(tmp_path, {**ADAPTER_JOB, "base_model": "/srv/node7/models/llama-8b"}, "adapter")
    assert not {"base_model", "base_model_relation"} & set(card.data.to_dict())
    assert "/srv/node7" not in text
    assert 'BASE = "llama-8b"  # a folder on the training node: point this at your copy of it' in text


def test_the_lot_comes_from_the_trail_and_a_trail_without_it_is_refused() -> None:
    accepted = {
        "lot_number": LOT.lot_number,
        "dataset_sha256": LOT.dataset_sha256,
        "manifest_sha256": "ef" * 32,
    }
    older = {**accepted, "lot_number": "00" * 32, "dataset_sha256": "99" * 32}
    records = [
        {"seq": 0, "event": Event.JOB_ACCEPTED, "data": older},
        {"seq": 1, "event": Event.JOB_ACCEPTED, "data": accepted},
        {"seq": 2, "event": Event.EXAM_VERDICT, "data": {"lot_number": LOT.lot_number}},
    ]
    assert lot_from_trail(records, LOT.lot_number) == LOT
    with pytest.raises(PublishError, match=r"no job_accepted record of lot 111111111111…"):
        lot_from_trail(records, "1" * 64)


@pytest.mark.parametrize(
    ("target", "field"),
    [
        ({"license": "Apache 2.0"}, "publish_target.license"),
        ({"datasets": ["a/b/c"]}, "publish_target.datasets"),
    ],
)
def test_a_bad_license_or_dataset_id_names_its_field(target: dict[str, Any], field: str) -> None:
    document = {**ADAPTER_JOB, "publish_target": {**ADAPTER_JOB["publish_target"], **target}}
    with pytest.raises(ManifestError, match=rf"  {re.escape(field)}: "):
        parse_manifest(document)


def _run_snippet(text: str, *, tag: Path, base: Path) -> dict[str, Any]:
    """The card's python block with TAG and BASE pointed at local folders, run as a user would paste it."""
    code = re.search(r"```python\n(.*?)\n```", text, re.S)
    assert code is not None
    source = re.sub(r'^TAG = ".*"', f"TAG = {str(tag)!r}", code.group(1), flags=re.M)
    source = re.sub(r'^BASE = ".*"', f"BASE = {str(base)!r}", source, flags=re.M)
    namespace: dict[str, Any] = {}
    exec(compile(source, "model-card-snippet", "exec"), namespace)
    return namespace


@pytest.mark.slow
def test_the_usage_snippets_load_the_tag_root_and_generate(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The adapter snippet (PeftModel on the base) and the merged one (transformers alone) run on real weights
    whose folder is the tag root, through the chat template shipped with them."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = tmp_path / "v2.1.0"
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], use_dora=True),
    )
    model.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(adapter)
    merged = tmp_path / "merged"
    shutil.copytree(tiny_model_dir, merged)
    for kind, tag in (("adapter", adapter), ("merged_model", merged)):
        text = write_model_card(tag, ADAPTER_JOB, EXAM, kind=kind, weights=tag, lot=LOT).read_text()
        ran = _run_snippet(text, tag=tag, base=tiny_model_dir)
        assert isinstance(ran["model"], PeftModel) == (kind == "adapter")
        assert ran["output"].shape[1] > ran["inputs"]["input_ids"].shape[1], f"{kind}: nothing generated"
