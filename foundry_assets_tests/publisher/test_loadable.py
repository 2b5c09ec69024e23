"""Published tags load the way Hugging Face users load them: from the tag's root, beside its one model card, with
every file readable by other users of the registry. The weights are real: trained by the crucible, folded by the
alchemist, published by `publish_job`."""

import json
import stat
from pathlib import Path

import pytest

from foundry_assets.alchemist import AdapterRef, merge_adapters
from foundry_assets.crucible.hardware import check_hardware
from foundry_assets.crucible.params import TrainParams
from foundry_assets.crucible.train import train_adapter
from foundry_assets.publisher.base import PUBLISHER_FILES
from foundry_assets.stages import PublishedArtifact
from foundry_assets_tests.crucible.conftest import qa
from foundry_assets_tests.publisher.jobs import Job

pytestmark = pytest.mark.slow

BASE = "foundry-demo/tiny-llama"
"""The manifest's base_model: a hub name; the node trains from its local copy (`model_path`)."""
PARAMS = TrainParams(
    rank=4,
    alpha=None,
    dropout=0.0,
    learning_rate=5e-3,
    max_steps=4,
    max_seq_length=64,
    logging_steps=2,
    seed=0,
    batch_size=4,
    grad_accum=1,
)
EXAMPLES = [qa(i) for i in range(16)]


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """A LoRA and a DoRA adapter trained by the crucible on the tiny Llama, each folded into a merged model by the
    alchemist: {method: (adapter folder, merged model folder)}."""
    root = tmp_path_factory.mktemp("trained")
    folders = {}
    for method in ("lora", "dora"):
        adapter = root / method / "adapter"
        train_adapter(
            model_path=tiny_model_dir,
            strategy_name=method,
            train_examples=EXAMPLES,
            out_dir=adapter,
            params=PARAMS,
            hardware=check_hardware(method, device="cpu"),
            base_model=BASE,
        )
        merged = merge_adapters(
            base_model=tiny_model_dir, adapters=[AdapterRef(adapter)], out_dir=root / method / "m"
        )
        folders[method] = (adapter, merged.out_dir)
    return folders


def _publish(
    tmp_path: Path, trained: dict[str, tuple[Path, Path]], method: str
) -> tuple[Path, PublishedArtifact]:
    """Publish the job of `method` (`artifact: auto`) to a local registry; returns the tag folder and the artifact."""
    adapter, merged = trained[method]
    job = Job(tmp_path, method=method, base_model=BASE, adapter_from=adapter, merged_from=merged)
    artifact = job.publish(job.exam()).artifact
    return job.registry / "v1", artifact


def _check_tag_files(tag: Path, tiny_model_dir: Path) -> None:
    """One model card (the publisher's), no node path in any file, every file 0644 and every folder 0755."""
    assert [p.relative_to(tag).as_posix() for p in tag.rglob("README.md")] == ["README.md"]
    assert {p.name for p in tag.iterdir()} >= PUBLISHER_FILES
    for path in [tag, *tag.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), f"{path.relative_to(tag)} is {oct(mode)}"
        if path.suffix in (".json", ".md", ".yaml", ".jinja"):
            text = path.read_text()
            assert str(tiny_model_dir) not in text, f"{path.name} names the node's base folder"
            assert "[More Information Needed]" not in text, f"{path.name} is an unfilled template"


def _generate(model: object, tokenizer: object) -> list[int]:
    import torch

    inputs = tokenizer("Question: what is 2 plus 2? Answer:", return_tensors="pt")  # type: ignore[operator]
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)  # type: ignore[attr-defined]
    return [int(t) for t in out[0][inputs["input_ids"].shape[1] :]]


def test_a_published_adapter_loads_with_peft_from_the_tag_root(
    tmp_path: Path,
    trained: dict[str, tuple[Path, Path]],
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tag, artifact = _publish(tmp_path, trained, "lora")
    assert artifact.artifact == "adapter"
    assert json.loads((tag / "adapter_config.json").read_text())["base_model_name_or_path"] == BASE
    _check_tag_files(tag, tiny_model_dir)

    tokenizer = AutoTokenizer.from_pretrained(str(tag))
    probe = tokenizer("Question: what is 3 plus 3?", return_tensors="pt")
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    with torch.no_grad():
        before = base(**probe).logits
    model = PeftModel.from_pretrained(base, str(tag))
    with torch.no_grad():
        after = model(**probe).logits
    assert not torch.allclose(before, after), "the trained adapter changes the base's output"
    assert len(_generate(model, tokenizer)) > 0

    # AutoPeftModelForCausalLM loads the base named in adapter_config.json: here the hub name resolves to a local
    # folder of that name, as it would resolve to the hub's copy elsewhere; never to the training node's path
    hub = tmp_path / "hub"
    (hub / "foundry-demo").mkdir(parents=True)
    (hub / BASE).symlink_to(tiny_model_dir, target_is_directory=True)
    monkeypatch.chdir(hub)
    auto = AutoPeftModelForCausalLM.from_pretrained(str(tag), dtype=torch.float32)
    with torch.no_grad():
        assert torch.allclose(auto(**probe).logits, after, atol=1e-5)


def test_a_dora_job_publishes_a_merged_model_that_loads_from_the_tag_root(
    tmp_path: Path, trained: dict[str, tuple[Path, Path]], tiny_model_dir: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tag, artifact = _publish(tmp_path, trained, "dora")
    assert artifact.artifact == "merged_model", "artifact: auto publishes what vLLM/TGI serve for a DoRA job"
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= set(
        artifact.files
    )
    assert not (tag / "adapter_config.json").exists()
    _check_tag_files(tag, tiny_model_dir)

    model = AutoModelForCausalLM.from_pretrained(str(tag), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(tag))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(model.state_dict()[name], base.state_dict()[name]), "the DoRA adapter is folded in"
    assert len(_generate(model, tokenizer)) > 0
