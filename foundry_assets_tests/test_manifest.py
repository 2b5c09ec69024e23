import json
from pathlib import Path

import pytest
import yaml

from foundry_assets.crucible.strategies import registered_names
from foundry_assets.errors import ManifestError
from foundry_assets.manifest import TrainingManifest, load_manifest, manifest_json_schema, parse_manifest

REFERENCE = Path(__file__).parents[1] / "examples" / "reference-manifest.yaml"


def _doc() -> dict:
    return yaml.safe_load(REFERENCE.read_text())


def test_reference_manifest_is_accepted_exactly() -> None:
    manifest = load_manifest(REFERENCE)
    assert manifest.job_id == "train-prod-2025-01-15"
    assert manifest.base_model == "unsloth/llama-3-8b-bnb-4bit"
    assert manifest.method_config.type == "orpo"
    assert manifest.method_config.rank == 64
    assert manifest.method_config.strict_hardware_check is True
    assert manifest.publish_target.registry == "s3://coreason-models/prod"
    assert manifest.publish_target.tag == "v2.1.0-safety"
    assert manifest.compute.batch_size == 4 and manifest.compute.grad_accum == 4
    # sections the loop needs get defaults a user would expect
    assert manifest.curation.similarity_threshold == 0.95
    assert manifest.exam.ngram_size == 13
    assert Path(manifest.data.path) == REFERENCE.parent / "data.jsonl"


@pytest.mark.parametrize(
    ("mutate", "field", "hint"),
    [
        (lambda d: d.update(job_id="../escape"), "job_id", "no '/', '..' or spaces"),
        (lambda d: d.update(job_id="has space"), "job_id", "not a safe name"),
        (lambda d: d.update(job_id="a/b"), "job_id", "not a safe name"),
        (
            lambda d: d["method_config"].update(type="sft"),
            "method_config.type",
            ", ".join(registered_names()),
        ),
        (lambda d: d["method_config"].update(rank=0), "method_config.rank", "greater than or equal to 1"),
        (lambda d: d["method_config"].update(lr=1), "method_config.lr", "unknown key"),
        (lambda d: d.update(colour="red"), "colour", "unknown key"),
        (
            lambda d: d["publish_target"].update(registry="ftp://host/x"),
            "publish_target.registry",
            "unknown scheme",
        ),
        (
            lambda d: d["publish_target"].update(registry="s3://"),
            "publish_target.registry",
            "names no bucket",
        ),
        (lambda d: d["publish_target"].update(tag="v1/../x"), "publish_target.tag", "not a safe name"),
        (lambda d: d.pop("base_model"), "base_model", "required field is missing"),
        (lambda d: d["compute"].update(batch_size="four"), "compute.batch_size", "got 'four'"),
    ],
)
def test_bad_manifests_name_the_field_and_the_fix(mutate, field: str, hint: str) -> None:
    doc = _doc()
    mutate(doc)
    with pytest.raises(ManifestError) as info:
        parse_manifest(doc, source="m.yaml")
    message = str(info.value)
    assert f"  {field}: " in message
    assert hint in message


def test_all_problems_are_reported_at_once() -> None:
    doc = _doc()
    doc["job_id"] = "bad id"
    doc["method_config"]["rank"] = -1
    with pytest.raises(ManifestError) as info:
        parse_manifest(doc)
    assert "job_id:" in str(info.value) and "method_config.rank:" in str(info.value)


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ManifestError, match="expected a mapping"):
        load_manifest(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("job_id: [unclosed\n")
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_manifest(tmp_path / "broken.yaml")


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path: Path) -> None:
    doc = _doc()
    doc["data"] = {"path": "drop/data.jsonl"}
    doc["model_path"] = "models/base"
    doc["publish_target"]["registry"] = "registry"
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(doc))
    manifest = load_manifest(tmp_path / "m.yaml")
    assert manifest.data.path == str(tmp_path / "drop" / "data.jsonl")
    assert manifest.model_path == str(tmp_path / "models" / "base")
    assert manifest.publish_target.registry == str(tmp_path / "registry")


def test_canonical_json_is_stable_and_fills_defaults() -> None:
    a = parse_manifest(_doc())
    b = TrainingManifest.model_validate(json.loads(a.canonical_json()))
    assert a.canonical_json() == b.canonical_json()
    assert '"similarity_threshold":0.95' in a.canonical_json()


def test_json_schema_describes_every_field() -> None:
    schema = manifest_json_schema()
    assert {"job_id", "base_model", "method_config", "publish_target", "compute"} <= set(schema["properties"])
    assert set(schema["required"]) == {"job_id", "base_model", "method_config", "publish_target"}
    for name, definition in schema["$defs"].items():
        for field, spec in definition["properties"].items():
            assert spec.get("description"), f"{name}.{field} has no description"


def test_readme_manifest_reference_names_every_field() -> None:
    """The README's manifest reference must not drift from the schema."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme[readme.index('```yaml\njob_id: "train-prod-2025-01-15"') :]
    block = block[: block.index("```\n", 8)]
    keys = {line.split(":")[0].strip() for line in block.splitlines() if ":" in line}

    def fields(schema: dict, defs: dict) -> set[str]:
        names = set()
        for name, spec in schema.get("properties", {}).items():
            names.add(name)
            ref = spec.get("$ref") or next(
                (a.get("$ref") for a in spec.get("anyOf", []) if "$ref" in a), None
            )
            if ref:
                names |= fields(defs[ref.rsplit("/", 1)[-1]], defs)
        return names

    schema = manifest_json_schema()
    missing = (
        fields(schema, schema["$defs"]) - keys - {"adapter", "job"}
    )  # merge source keys are in the comment
    assert not missing, f"README manifest reference lacks {sorted(missing)}"
