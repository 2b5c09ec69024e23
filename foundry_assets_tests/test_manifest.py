import ast
import json
import os
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from foundry_assets.cli import main
from foundry_assets.crucible.strategies import registered_names
from foundry_assets.errors import ManifestError
from foundry_assets.manifest import (
    MAX_QUOTED_CHARS,
    MergeSource,
    TrainingManifest,
    load_manifest,
    manifest_json_schema,
    parse_manifest,
    read_yaml,
)
from foundry_assets_tests.intake.hostile import alias_bomb

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
        (lambda d: d["publish_target"].update(tag="v1\n"), "publish_target.tag", "not a safe name"),
        (
            lambda d: d.update(job_id="job-a\n"),
            "job_id",
            "not a safe name",
        ),  # `$` matched before a last newline
        (lambda d: d.pop("base_model"), "base_model", "required field is missing"),
        (lambda d: d["compute"].update(batch_size="four"), "compute.batch_size", "got 'four'"),
        (
            lambda d: d.setdefault("exam", {}).update(champion={"job": "a", "tag": "v1"}),
            "exam.champion",
            "exactly one of `job`",
        ),
        (lambda d: d.setdefault("exam", {}).update(champion={}), "exam.champion", "exactly one of `job`"),
        (
            lambda d: d.setdefault("exam", {}).update(champion={"job": "a", "registry": "/r"}),
            "exam.champion",
            "only for a `tag` champion",
        ),
        (
            lambda d: d.setdefault("exam", {}).update(champion={"tag": "v1", "registry": "ftp://h/x"}),
            "exam.champion.registry",
            "unknown scheme",
        ),
        (
            lambda d: d.setdefault("exam", {}).update(champion={"job": "../up"}),
            "exam.champion.job",
            "not a safe name",
        ),
        (
            lambda d: d.setdefault("exam", {}).update(champion={"tag": "v1"}, gate=[], max_contamination=0.5),
            "exam",
            "no metric is compared with the champion",
        ),
        (
            lambda d: d.setdefault("exam", {}).update(champion={"job": d["job_id"]}),
            "(document)",
            "exam.champion.job 'train-prod-2025-01-15' is this job itself",
        ),
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
    (tmp_path / "models" / "base").mkdir(parents=True)
    (tmp_path / "models" / "base" / "config.json").write_text("{}")
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(doc))
    manifest = load_manifest(tmp_path / "m.yaml")
    assert manifest.data.path == str(tmp_path / "drop" / "data.jsonl")
    assert manifest.model_path == str(tmp_path / "models" / "base")
    assert manifest.publish_target.registry == str(tmp_path / "registry")
    doc["exam"] = {"champion": {"tag": "v1.0.0", "registry": "releases"}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(doc))
    champion = load_manifest(tmp_path / "m.yaml").exam.champion
    assert champion is not None and champion.registry == str(tmp_path / "releases")
    assert champion.tag == "v1.0.0" and champion.job is None


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


def _section_aliases(trees: list[ast.Module]) -> dict[type[BaseModel], set[str]]:
    """For each manifest section class, the names code holds it by: its attribute on the manifest, names assigned from
    that attribute (`method = manifest.method_config`), parameters annotated with the class, loop variables over
    `merge.sources`."""
    aliases: dict[type[BaseModel], set[str]] = {TrainingManifest: {"manifest"}, MergeSource: {"sources"}}
    for name, info in TrainingManifest.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            aliases[info.annotation] = {name}

    def last(node: ast.expr) -> str | None:
        return (
            node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
        )

    for _ in range(3):  # aliases of aliases
        for tree in trees:
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Assign)
                    and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name)
                ):
                    for names in aliases.values():
                        if last(node.value) in names:
                            names.add(node.targets[0].id)
                elif isinstance(node, ast.arg) and node.annotation is not None:
                    words = ast.unparse(node.annotation).replace("|", " ").split()
                    for cls, names in aliases.items():
                        if cls.__name__ in words:
                            names.add(node.arg)
                elif (
                    isinstance(node, ast.For | ast.comprehension)
                    and isinstance(node.target, ast.Name)
                    and last(node.iter) in aliases[MergeSource]
                ):
                    aliases[MergeSource].add(node.target.id)
    return aliases


def test_every_manifest_field_is_read() -> None:
    """A field the foundry accepts but never reads says one thing and does another (as `curation.batch_size` once
    did): every field of every section must be read somewhere outside the schema, through a name that holds it."""
    package = Path(__file__).parents[1] / "foundry_assets"
    trees = [
        ast.parse(p.read_text(encoding="utf-8")) for p in package.rglob("*.py") if p.name != "manifest.py"
    ]
    aliases = _section_aliases(trees)
    reads = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                holder = node.value
                name = holder.attr if isinstance(holder, ast.Attribute) else getattr(holder, "id", None)
                reads |= {(cls, node.attr) for cls, names in aliases.items() if name in names}
    unread = [
        f"{cls.__name__}.{field}"
        for cls in aliases
        for field in cls.model_fields
        if (cls, field) not in reads
    ]
    assert not unread, f"manifest fields never read: {unread}"


def test_a_key_given_twice_is_refused_naming_it_and_its_lines(tmp_path: Path) -> None:
    """YAML lets a repeated key silently win; in a GxP manifest the first value would be lost without a word."""
    text = REFERENCE.read_text().replace('job_id: "train', 'job_id: a\njob_id: "train', 1)
    path = tmp_path / "manifest.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError, match=r"'job_id' is given twice \(lines 2 and 3\)"):
        load_manifest(path)


def _numeric_fields(model: type[BaseModel], prefix: str) -> list[str]:
    """The dotted path of every int/float field under `model` (merge sources as `merge.sources.0.…`)."""
    found = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = MergeSource if name == "sources" else info.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            found += _numeric_fields(nested, f"{path}.0." if name == "sources" else f"{path}.")
        elif any(t in str(info.annotation) for t in ("int", "float")):
            found.append(path)
    return found


# `curation.*` numbers are bounded with the curation settings (issue 13, item 7: the curator's change)
NUMERIC_FIELDS = [p for p in _numeric_fields(TrainingManifest, "") if not p.startswith("curation.")]


def _set(doc: dict, path: str, value: object) -> None:
    *parents, last = path.split(".")
    for part in parents:
        doc = doc[int(part)] if part.isdigit() else doc.setdefault(part, {})
    doc[last] = value


def test_the_bounds_table_covers_the_sections() -> None:
    assert {
        "compute.batch_size",
        "method_config.max_seq_length",
        "merge.sources.0.weight",
        "exam.ngram_size",
    } <= set(NUMERIC_FIELDS)


@pytest.mark.parametrize(
    "value", [10**400, 1e300, float("inf"), float("nan"), -1], ids=["10^400", "1e300", "inf", "nan", "-1"]
)
@pytest.mark.parametrize("field", NUMERIC_FIELDS)
def test_every_manifest_number_is_bounded_and_names_its_field(field: str, value: object) -> None:
    """batch_size 10^400 passed validation and crashed the run late with a generic error: every number has a range a
    user of the field would find sensible, and a value outside it is refused at validation, naming the field."""
    doc = _doc()
    doc["merge"] = {"sources": [{"adapter": "adapters/a"}]}
    _set(doc, field, value)
    with pytest.raises(ManifestError) as info:
        parse_manifest(doc, source="m.yaml")
    assert f"  {field}: " in str(info.value)


def test_every_manifest_number_has_a_maximum_in_the_schema() -> None:
    """The limits are part of the schema users read (`foundry schema`), each with its reason in the description."""
    schema = manifest_json_schema()
    for name, definition in schema["$defs"].items():
        if name == "CurationConfig":
            continue
        for field, spec in definition["properties"].items():
            options = [spec, *spec.get("anyOf", [])]
            if any(o.get("type") in ("integer", "number") for o in options):
                assert any("maximum" in o or "exclusiveMaximum" in o for o in options), f"{name}.{field}"


def test_an_exam_that_gates_nothing_is_refused() -> None:
    """`gate: []` with `max_contamination: 1.0` published whatever was trained: nothing was checked."""
    doc = _doc()
    doc["exam"] = {"gate": [], "max_contamination": 1.0}
    with pytest.raises(ManifestError, match=r"(?s)  exam: .*gates nothing.*exam\.gate"):
        parse_manifest(doc)
    doc["exam"] = {"gate": [], "max_contamination": 0.1}  # the contamination limit still gates
    parse_manifest(doc)
    doc["exam"] = {"gate": ["heldout_loss"], "max_contamination": 1.0}
    parse_manifest(doc)


def _write(tmp_path: Path, **changes: object) -> Path:
    doc = _doc()
    doc.update(changes)
    path = tmp_path / "job" / "manifest.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    "data_path", ["/proc/self/environ", "../outside.jsonl", "/etc/hostname", "link.jsonl"]
)
def test_data_outside_the_manifest_folder_is_refused(
    data_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the CLI, `data.path: /proc/self/environ` copied the AWS secret into the job folder."""
    monkeypatch.delenv("FOUNDRY_DATA_ROOTS", raising=False)
    (tmp_path / "outside.jsonl").write_text('{"text": "x"}\n')
    path = _write(tmp_path, data={"path": data_path})
    (path.parent / "link.jsonl").symlink_to(
        tmp_path / "outside.jsonl"
    )  # a symlink is followed before the check
    with pytest.raises(
        ManifestError, match=r"data\.path .* outside the manifest's folder.*FOUNDRY_DATA_ROOTS"
    ):
        load_manifest(path)
    load_manifest(path, resolve_paths=False)  # a registered manifest is read as it was registered


def test_data_roots_allow_listed_folders_and_never_pseudo_or_special_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "data.jsonl").write_text('{"text": "x"}\n')
    monkeypatch.setenv("FOUNDRY_DATA_ROOTS", f"{tmp_path / 'elsewhere'}:{shared}")
    path = _write(tmp_path, data={"path": str(shared / "data.jsonl")})
    assert load_manifest(path).data.path == str(shared / "data.jsonl")
    monkeypatch.setenv("FOUNDRY_DATA_ROOTS", "/")
    for special in ("/proc/self/environ", "/dev/zero"):
        with pytest.raises(ManifestError, match=r"data\.path .* not a regular file"):
            load_manifest(_write(tmp_path, data={"path": special}))
    os.mkfifo(shared / "fifo.jsonl")
    with pytest.raises(ManifestError, match=r"data\.path .* not a regular file"):
        load_manifest(_write(tmp_path, data={"path": str(shared / "fifo.jsonl")}))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"model_path": "weights.safetensors"}, "model_path"),  # a file, not a folder
        ({"model_path": "missing-folder"}, "model_path"),
        ({"model_path": "empty"}, "model_path"),  # a folder without config.json
        ({"base_model": "./weights.safetensors"}, "base_model"),
        ({"base_model": "/nonexistent/base"}, "base_model"),
    ],
)
def test_a_local_model_that_is_no_model_folder_is_refused_at_validation(
    changes: dict, field: str, tmp_path: Path
) -> None:
    """`model_path` naming a file surfaced only after curation, and the job_id was then 'already registered'."""
    path = _write(tmp_path, **changes)
    (path.parent / "weights.safetensors").write_bytes(b"\0")
    (path.parent / "empty").mkdir()
    with pytest.raises(ManifestError, match=rf"{field} .*config\.json"):
        load_manifest(path)


def test_a_local_model_folder_and_a_hub_name_are_valid(tmp_path: Path) -> None:
    path = _write(tmp_path, model_path="base", base_model="org/some-model-not-on-this-disk")
    (path.parent / "base").mkdir()
    (path.parent / "base" / "config.json").write_text("{}")
    assert load_manifest(path).model_path == str(path.parent / "base")


@pytest.mark.parametrize(
    ("field", "url", "carrier"),
    [
        ("registry", "git+https://ghp_Zq8sEkr1t@host/org/repo.git", "a user name"),
        ("registry", "git+https://user:pw-Zq8sEkr1t@host/org/repo.git", "a password"),
        ("registry", "s3://AKIAKEY:Zq8sEkr1t@bucket/prefix", "a password"),
        ("registry", "git+ssh://git:pw-Zq8sEkr1t@host/org/repo.git", "a password"),
        ("registry", "s3://bucket/prefix?X-Amz-Signature=Zq8sEkr1t", "'X-Amz-Signature'"),
        ("registry", "git+https://host/org/repo.git?token=Zq8sEkr1t", "'token'"),
        ("webhook_url", "https://hook-Zq8sEkr1t@deploy.example/hooks", "a user name"),
        ("webhook_url", "https://bot:Zq8sEkr1t@deploy.example/hooks", "a password"),
        ("webhook_url", "https://deploy.example/hooks?access_token=Zq8sEkr1t", "'access_token'"),
        ("webhook_url", "https://deploy.example/hooks?a=1&X-Amz-Credential=Zq8sEkr1t", "'X-Amz-Credential'"),
        ("webhook_url", "https://deploy.example/hooks?sig=Zq8sEkr1t", "'sig'"),
    ],
)
def test_a_credential_in_a_publish_url_is_refused_without_echoing_it(
    field: str, url: str, carrier: str
) -> None:
    doc = _doc()
    doc["publish_target"][field] = url
    with pytest.raises(ManifestError) as info:
        parse_manifest(doc, source="m.yaml")
    message = str(info.value)
    assert f"  publish_target.{field}: {field} holds a credential" in message and carrier in message
    assert "Zq8sEkr1t" not in message and "not echoed" in message
    fix = "FOUNDRY_WEBHOOK_TOKEN" if field == "webhook_url" else "AWS_ACCESS_KEY_ID"
    assert fix in message, "the error says where the credential goes instead"


@pytest.mark.parametrize(
    ("field", "url"),
    [
        ("registry", "git+ssh://git@github.com/org/models.git"),  # the ssh login is not a secret
        ("registry", "git+ssh://github.com/org/models.git#release"),
        ("registry", "s3://bucket/prefix"),
        ("webhook_url", "https://deploy.example/hooks?env=prod&team=ml"),
    ],
)
def test_publish_urls_without_credentials_stay_valid(field: str, url: str) -> None:
    doc = _doc()
    doc["publish_target"][field] = url
    assert getattr(parse_manifest(doc).publish_target, field) == url


def test_an_alias_bomb_is_refused_before_it_expands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """350 bytes that alias 9^9 strings: once 21 s, 1.5 GB and a 35 MB error through the sensor, past 2.8 GB
    through `foundry validate`. Aliases are refused while composing, before anything is built."""
    with pytest.raises(ManifestError, match=r"alias \*a refused: a manifest uses no YAML aliases"):
        read_yaml(alias_bomb())
    path = tmp_path / "bomb.yaml"
    path.write_bytes(alias_bomb())
    with pytest.raises(ManifestError, match="line 2, column 8"):
        load_manifest(path)
    assert main(["validate", str(path)]) == 2
    assert len(capsys.readouterr().err) < 400


def test_deep_nesting_is_refused_by_name_not_a_recursion_error() -> None:
    """2 KB of `[` (block or flow) raised RecursionError out of the composer, past every `except FoundryError`."""
    with pytest.raises(ManifestError, match="nesting deeper than 32 levels refused"):
        read_yaml(b"job_id: " + b"[" * 2000)
    with pytest.raises(ManifestError, match="nesting deeper than 32 levels refused"):
        read_yaml("".join("  " * depth + "- \n" for depth in range(200)))


def test_a_manifest_file_over_64_kib_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "manifest.yaml"
    path.write_text(REFERENCE.read_text() + ("#" * 999 + "\n") * 70)  # valid YAML, 70 KB
    with pytest.raises(ManifestError, match="larger than 64 KiB"):
        load_manifest(path)
    os.truncate(path, 1 << 40)  # a 1 TiB sparse file: read whole, it would never finish
    with pytest.raises(ManifestError, match="larger than 64 KiB"):
        load_manifest(path)


def test_values_yaml_reads_but_python_cannot_build_are_manifest_errors() -> None:
    """A 5000-digit integer, a 13th month, a list as a key: ValueError/TypeError escaped read_yaml, so the sensor
    (which catches FoundryError) failed its tick."""
    with pytest.raises(ManifestError, match="holds a value that cannot be read: Exceeds the limit"):
        read_yaml("seed: " + "1" * 5000)
    with pytest.raises(ManifestError, match=r"month must be in 1\.\.12"):
        read_yaml("created: 2024-13-45")
    with pytest.raises(ManifestError, match=r"found unhashable key \(line 1, column 2\)"):
        read_yaml("{[a]: 1, [a]: 2}")


def test_yaml_errors_name_the_line_without_quoting_the_text() -> None:
    """PyYAML's error carries a snippet of the offending line: for a symlinked credentials file, the secret."""
    text = "[default]\naws_secret_access_key = fAkEsEcReT\n"
    with pytest.raises(ManifestError) as info:
        read_yaml(text)
    assert str(info.value) == (
        "manifest is not valid YAML: expected '<document start>', but found '<scalar>' (line 2, column 1)"
    )
    with pytest.raises(ManifestError, match=r"is not UTF-8 text: byte 0xff on line 2; save it as UTF-8"):
        read_yaml(b"job_id: a\n# \xff\n")


def test_quoted_inputs_and_the_number_of_problems_are_bounded() -> None:
    """Errors quoted `repr(input)` whole: a 35 MB reason in the sensor's cursor. Now a reprlib summary, each line
    at most MAX_QUOTED_CHARS, at most 20 problems listed."""
    doc = _doc()
    doc["base_model"] = ["x" * 100] * 100_000
    doc["job_id"] = "bad/" + "y" * 100_000
    doc["exam"] = {f"unknown_{n}": n for n in range(1000)}
    with pytest.raises(ManifestError) as info:
        parse_manifest(doc)
    message = str(info.value)
    assert "base_model: Input should be a valid string (got ['xxxx" in message
    assert "job_id 'bad/yyy" in message and "… (" in message
    assert "… and 982 more problem(s)" in message
    assert len(message) < 22 * (MAX_QUOTED_CHARS + 40) + MAX_QUOTED_CHARS
