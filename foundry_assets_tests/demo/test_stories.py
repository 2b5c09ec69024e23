"""Story C on a pretrained base: the drops it writes are jobs the foundry accepts, each source job gates its own skill
and holds everyday requests answered as the base answers them, and the merge job gates both skills on held-out items
no source job trains on."""

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from foundry_assets.demo import skills
from foundry_assets.demo.pretrain import pretrain_base
from foundry_assets.demo.stories import EVERYDAY, MERGE_DENSITY, write_story_c_pretrained
from foundry_assets.errors import DataError
from foundry_assets.examiner.scoring import generate_answers, prompt_texts, stop_tokens
from foundry_assets.manifest import load_manifest
from foundry_assets_tests.demo.test_pretrain import TINY


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pretrain_base(tmp_path_factory.mktemp("story") / "base", TINY)


def _records(manifest_path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (manifest_path.parent / "data.jsonl").read_text().splitlines()]


def test_the_source_jobs_gate_their_skill_and_keep_everyday_requests_as_the_base_answers(
    base: Path, tmp_path: Path
) -> None:
    story = write_story_c_pretrained(tmp_path, base, prefix="s")
    logic, safety = load_manifest(story.logic), load_manifest(story.safety)
    assert (logic.exam.gate, safety.exam.gate) == (["logic_score"], ["safety_rate"])
    assert logic.model_path == safety.model_path == str(base)
    assert logic.publish_target.artifact == safety.publish_target.artifact == "adapter"
    assert logic.curation.decontaminate_train and logic.method_config.alpha == logic.method_config.rank == 8

    everyday = [r for r in _records(story.safety) if "task" not in r]
    assert [r for r in _records(story.logic) if "task" not in r] == everyday[: EVERYDAY["logic_score"]]
    assert len(everyday) == EVERYDAY["safety_rate"] == len({r["instruction"] for r in everyday})
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    first = [str(r["instruction"]) for r in everyday[:4]]
    answers = generate_answers(
        model,
        tokenizer,
        prompt_texts(tokenizer, [[{"role": "user", "content": r}] for r in first]),
        max_new_tokens=48,
        stop_ids=stop_tokens(tokenizer),
    )
    assert [r["output"] for r in everyday[:4]] == answers  # the base's own greedy answers
    assert not {r["instruction"] for r in everyday} & {
        r["instruction"] for r in _records(story.logic) + _records(story.safety) if "task" in r
    }


def test_the_merge_job_gates_both_skills_on_items_no_source_trains_on(base: Path, tmp_path: Path) -> None:
    story = write_story_c_pretrained(tmp_path, base, prefix="s")
    merge = load_manifest(story.merge)
    assert merge.exam.gate == ["logic_score", "safety_rate"] and merge.exam.source_retention == 0.9
    assert [(s.job, s.weight, s.density) for s in merge.merge.sources] == [
        ("s-logic", 1.0, MERGE_DENSITY),
        ("s-safety", 1.0, MERGE_DENSITY),
    ]
    assert not merge.merge.include_own_adapter and not merge.merge.normalize
    held_out = _records(story.merge)
    trained = _records(story.logic) + _records(story.safety)
    assert {r["task"] for r in held_out} == {"logic", "safety"}
    assert not {r["instruction"] for r in held_out} & {r["instruction"] for r in trained}
    assert skills.uncontaminated(held_out, trained) == held_out  # the exam's 13-gram check finds nothing
    # look-alikes: over-refusal counts against the merge
    assert any(r.get("harmful") is False for r in held_out)


def test_a_base_that_was_not_pretrained_here_is_refused_naming_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"--base {tmp_path} has no foundry_pretrained.json"):
        write_story_c_pretrained(tmp_path / "root", tmp_path)
