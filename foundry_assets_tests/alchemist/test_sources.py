"""Merge sources that are other jobs: resolved from the foundry's records, refused before any merge work."""

import json
import shutil
from pathlib import Path

import pytest

from foundry_assets.alchemist import (
    JobSource,
    merge_adapters,
    resolve_job_sources,
)
from foundry_assets.audit import AuditTrail
from foundry_assets.demo.tiny_model import build_tiny_llama
from foundry_assets.errors import MergeError
from foundry_assets.hashing import sha256_file, sha256_tree
from foundry_assets.manifest import TrainingManifest, parse_manifest
from foundry_assets.publisher import push_artifact
from foundry_assets.workspace import Workspace
from foundry_assets_tests.adapters import make_adapter

pytestmark = pytest.mark.slow


def _manifest(job_id: str, model_path: Path, registry: Path, **merge: object) -> TrainingManifest:
    return parse_manifest(
        {
            "job_id": job_id,
            "base_model": "tiny",
            "model_path": str(model_path),
            "method_config": {"type": "dora"},
            "publish_target": {"registry": str(registry), "tag": f"v1-{job_id}"},
            "merge": merge,
        }
    )


def _trained_job(
    workspace: Workspace,
    job_id: str,
    base: Path,
    *,
    passed: bool = True,
    examined: bool = True,
    published: str | None = "adapter",
    seed: int = 1,
    legacy: bool = False,
    claimed_base: str = "tiny",
) -> None:
    """A registered job with an adapter and an audit trail as the Dagster assets write them; with `published`, the
    adapter (or a stand-in merged model) is published to the job's registry and its weights leave the node.

    The adapter is saved as the crucible saves it: `claimed_base` as its base_model_name_or_path, no README.md, at the
    tag's root. `legacy`: as earlier versions saved and published it (the base's absolute path, PEFT's README.md,
    in the tag's `adapter/` folder)."""
    manifest = _manifest(job_id, base, workspace.root.parent / "registry")
    workspace.register(manifest)
    adapter = make_adapter(base, workspace.stage_dir(job_id, "adapter"), seed=seed, use_dora=True)
    if not legacy:
        (adapter / "README.md").unlink()
        config = json.loads((adapter / "adapter_config.json").read_text())
        (adapter / "adapter_config.json").write_text(
            json.dumps({**config, "base_model_name_or_path": claimed_base})
        )
    trail = AuditTrail(workspace.audit_path(job_id))
    lot = f"lot-{job_id}"
    trail.append("job_accepted", job_id=job_id, lot_number=lot)
    trail.append("adapter_saved", job_id=job_id, adapter_dir=str(adapter), files=sha256_tree(adapter))
    if examined:
        reasons = [] if passed else ["logic_score 0.1000 is not above the baseline 0.2000"]
        trail.append("exam_verdict", job_id=job_id, passed=passed, reasons=reasons, lot_number=lot)
    if examined and passed and published:
        staging = workspace.stage_dir(job_id, "staging")
        shutil.copytree(adapter, staging / published if legacy else staging)
        target = manifest.publish_target
        result = push_artifact(staging, target.tag, registry=target.registry)
        trail.append(
            "published",
            job_id=job_id,
            uri=result.uri,
            tag=result.tag,
            registry=target.registry,
            status=result.status,
            artifact=published,
            files=result.files,
            lot_number=lot,
        )
        workspace.remove_weights(job_id)


@pytest.fixture
def jobs(tiny_model_dir: Path, tmp_path: Path) -> Workspace:
    workspace = Workspace(tmp_path / "foundry")
    _trained_job(workspace, "logic", tiny_model_dir, seed=1)
    _trained_job(workspace, "safety", tiny_model_dir, seed=2)
    return workspace


def _resolve(workspace: Workspace, manifest: TrainingManifest) -> list[JobSource]:
    return resolve_job_sources(
        manifest, workspace=workspace, trail_for=lambda job: AuditTrail(workspace.audit_path(job))
    )


def test_job_sources_are_fetched_from_their_registry_with_lot_and_hashes(
    jobs: Workspace, tiny_model_dir: Path, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    manifest = _manifest(
        "super",
        tiny_model_dir,
        registry,
        sources=[{"job": "logic", "density": 0.7}, {"job": "safety", "weight": 0.5}],
    )
    assert not jobs.stage_dir("logic", "adapter").exists(), "the source's weights left its node folder"
    sources = _resolve(jobs, manifest)
    assert [(s.job_id, s.lot_number, s.density, s.weight) for s in sources] == [
        ("logic", "lot-logic", 0.7, 1.0),
        ("safety", "lot-safety", 0.5, 0.5),
    ]
    assert sources[0].adapter_dir == jobs.source_dir("super", "logic")
    meta = sources[0].to_metadata()
    assert meta["published_uri"] == (registry / "v1-logic").resolve().as_uri()
    assert meta["adapter_sha256"]["adapter_model.safetensors"] == sha256_file(
        registry / "v1-logic" / "adapter_model.safetensors"
    )
    assert meta["exam"]["passed"] is True
    result = merge_adapters(
        base_model=tiny_model_dir, adapters=[s.ref() for s in sources], out_dir=tmp_path / "m", seed=0
    )
    assert result.method == "dare_ties" and [s["name"] for s in result.sources] == ["logic", "safety"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("ghost", r"'ghost' does not exist"),
        ("failed", r"'failed' failed its latest exam .*logic_score 0.1000"),
        ("unexamined", r"'unexamined': its latest adapter .* has not been examined"),
        ("other-base", r"'other-base' was trained on another base"),
        (
            "claims-other-base",
            r"'claims-other-base': its adapter_config.json says base_model_name_or_path='org/other', but this "
            r"merge job's base_model is 'tiny'",
        ),
        ("merger", r"'merger' is itself a merge job"),
        ("unpublished", r"'unpublished': its examined adapter .* was never published; .*artifact: adapter"),
        (
            "merged-only",
            r"'merged-only' published its merged_model to .*, not its adapter; .*artifact: adapter",
        ),
        ("tampered", r"'tampered': its published adapter could not be fetched .*adapter_model\.safetensors"),
        (
            "untagged",
            r"'untagged': its published adapter could not be fetched .*'v1-untagged' does not exist",
        ),
    ],
)
def test_bad_job_sources_are_refused_before_any_merge(
    setup: str, message: str, jobs: Workspace, tiny_model_dir: Path, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    if setup == "failed":
        _trained_job(jobs, setup, tiny_model_dir, passed=False)
    elif setup == "unexamined":
        _trained_job(jobs, setup, tiny_model_dir, examined=False)
    elif setup == "other-base":
        _trained_job(jobs, setup, build_tiny_llama(tmp_path / "other", seed=1))
    elif setup == "claims-other-base":
        _trained_job(jobs, setup, tiny_model_dir, claimed_base="org/other")
    elif setup == "merger":
        jobs.register(_manifest(setup, tiny_model_dir, registry, sources=[{"job": "logic"}]))
    elif setup == "unpublished":
        _trained_job(jobs, setup, tiny_model_dir, published=None)
    elif setup == "merged-only":
        _trained_job(jobs, setup, tiny_model_dir, published="merged_model")
    elif setup == "tampered":  # the registry copy changed after the publish
        _trained_job(jobs, setup, tiny_model_dir)
        (registry / f"v1-{setup}" / "adapter_model.safetensors").write_bytes(b"not the adapter")
    elif setup == "untagged":  # the tag was deleted from the registry
        _trained_job(jobs, setup, tiny_model_dir)
        shutil.rmtree(registry / f"v1-{setup}")
    manifest = _manifest("super", tiny_model_dir, registry, sources=[{"job": "logic"}, {"job": setup}])
    with pytest.raises(MergeError, match=message) as info:
        _resolve(jobs, manifest)
    assert "'logic'" not in str(info.value)  # only the bad source is named
    assert not jobs.stage_dir("super", "sources").exists(), (
        "nothing fetched is left on the node for a refused merge"
    )


def test_a_source_published_before_the_root_layout_is_fetched_from_its_adapter_folder(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Tags published by earlier versions hold the adapter in `adapter/` (with PEFT's README.md), and its config
    names the base's absolute path: still a merge source, checked against the same records."""
    workspace = Workspace(tmp_path / "foundry")
    _trained_job(workspace, "logic", tiny_model_dir, seed=1)
    _trained_job(workspace, "old", tiny_model_dir, seed=2, legacy=True)
    registry = tmp_path / "registry"
    assert (registry / "v1-old" / "adapter" / "adapter_config.json").is_file()
    manifest = _manifest("super", tiny_model_dir, registry, sources=[{"job": "logic"}, {"job": "old"}])
    sources = _resolve(workspace, manifest)
    old = sources[1].adapter_dir
    assert sorted(p.name for p in old.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert sources[1].adapter_files == sha256_tree(old)
    result = merge_adapters(
        base_model=tiny_model_dir, adapters=[s.ref() for s in sources], out_dir=tmp_path / "m", seed=0
    )
    assert [s["name"] for s in result.sources] == ["logic", "old"]
