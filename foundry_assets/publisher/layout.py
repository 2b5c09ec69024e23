"""The published artifact's layout: the weights at the tag's root, beside the publisher's own four files.

A tag is shaped as the Hugging Face ecosystem loads it: `PeftModel.from_pretrained(base, TAG)` reads an adapter's
`adapter_config.json`/`adapter_model.safetensors` and `AutoModelForCausalLM.from_pretrained(TAG)` a merged model's
`config.json`/`*.safetensors` from the tag folder itself. Beside them sit the publisher's files (`PUBLISHER_FILES`):
the training manifest, the exam report, the model card (README.md, the tag's only card) and `MANIFEST.sha256`, which
`push_artifact` adds. Tags published before this layout hold the weights in an `adapter/` or `merged_model/` folder
(`LEGACY_WEIGHT_FOLDERS`); `weights_of` reads either. Everything here is deterministic (no timestamps, sorted keys),
so re-staging the same job yields the same bytes and a re-publish of the same tag is a no-op.
"""

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from foundry_assets.errors import PublishError
from foundry_assets.publisher.base import HASH_MANIFEST, short_error
from foundry_assets.redact import redact

MODEL_CARD = "README.md"
MANIFEST_FILE = "manifest.yaml"
EXAM_REPORT_FILE = "exam_report.json"
PUBLISHER_FILES = frozenset({MODEL_CARD, MANIFEST_FILE, EXAM_REPORT_FILE, HASH_MANIFEST})
"""The files the publisher writes at a tag's root; every other file of a tag is the weights (and tokenizer)."""
LEGACY_WEIGHT_FOLDERS = ("adapter", "merged_model")
"""Where tags published by earlier versions hold their weights (one of them, named after the artifact kind)."""


def _cell(value: Any) -> str:
    """A value as a markdown table cell: floats to 4 significant digits, None as '—', pipes escaped."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    """A two-column markdown table of the rows whose value is set."""
    lines = ["| | |", "|---|---|"]
    return lines + [f"| {name} | {_cell(value)} |" for name, value in rows if value not in (None, "", [])]


def render_model_card(manifest: Mapping[str, Any], exam_report: Mapping[str, Any]) -> str:
    """The model card's markdown: front matter, what was trained and how, the exam's numbers, how to verify."""
    method = manifest.get("method_config", {})
    target = manifest.get("publish_target", {})
    merge_sources = manifest.get("merge", {}).get("sources", [])
    method_name = str(method.get("type", "unknown"))
    front = {
        "base_model": manifest.get("base_model"),
        "library_name": "peft",
        "tags": ["coreason-model-foundry", method_name],
    }
    lines = ["---", yaml.safe_dump(front, sort_keys=True).strip(), "---", ""]
    lines += [f"# {manifest.get('job_id', 'model')} — {target.get('tag', '')}".rstrip(" —"), ""]
    lines += [
        f"A {method_name.upper()} adapter of `{manifest.get('base_model')}` trained by coreason-model-foundry"
        + (f" and DARE-TIES-merged with {len(merge_sources)} other adapter(s)." if merge_sources else "."),
        "",
        "## Training",
        "",
    ]
    lines += _training_table(method_name, method, exam_report)
    lines += _exam_section(exam_report)
    lines += [
        "",
        "## Files and verification",
        "",
        f"`{MANIFEST_FILE}` is the training manifest, `{EXAM_REPORT_FILE}` the full exam report. `MANIFEST.sha256` "
        "lists the SHA256 of every file; check a download with `sha256sum -c MANIFEST.sha256`.",
    ]
    return "\n".join(lines) + "\n"


def _training_table(method_name: str, method: Mapping[str, Any], exam_report: Mapping[str, Any]) -> list[str]:
    """How the adapter was trained, and the lot it was trained from."""
    return _table(
        [
            ("method", method_name),
            ("rank / alpha", f"{method.get('rank')} / {method.get('alpha') or method.get('rank')}"),
            ("learning rate", method.get("learning_rate")),
            ("steps", method.get("max_steps")),
            ("max sequence length", method.get("max_seq_length")),
            ("seed", method.get("seed")),
            ("lot number", exam_report.get("lot_number")),
            ("dataset sha256", exam_report.get("dataset_sha256")),
            ("manifest sha256", exam_report.get("manifest_sha256")),
        ]
    )


def _exam_section(exam_report: Mapping[str, Any]) -> list[str]:
    """The exam's verdict, its metrics against the baseline, the contamination share and the reasons."""
    passed = exam_report.get("passed")
    verdict = "passed" if passed else "FAILED" if passed is not None else "not recorded"
    lines = [
        "",
        "## Exam",
        "",
        f"Verdict: **{verdict}** ({exam_report.get('items_scored', 0)} held-out items scored).",
        "",
    ]
    metrics = exam_report.get("metrics", [])
    if metrics:
        lines += ["| metric | baseline | candidate | required | result |", "|---|---|---|---|---|"]
        for row in metrics:
            result = "pass" if row.get("passed") else "FAIL"
            cells = [_cell(row.get(k)) for k in ("name", "baseline", "candidate", "required")]
            lines.append(f"| {' | '.join(cells)} | {result} |")
    contamination = exam_report.get("contamination") or {}
    if contamination:
        lines += [
            "",
            f"Contamination: {_cell(contamination.get('fraction'))} of {contamination.get('test_items', '?')} test "
            f"items share a {contamination.get('ngram_n', '?')}-gram with the training data "
            f"(allowed: {_cell(contamination.get('max_allowed'))}).",
        ]
    reasons = exam_report.get("reasons") or []
    if reasons:
        lines += ["", "Reasons:", *(f"- {_cell(r)}" for r in reasons)]
    return lines


def write_model_card(
    staging: Path, manifest_dict: Mapping[str, Any], exam_report_dict: Mapping[str, Any]
) -> Path:
    """Write the model card (README.md) into `staging` and return its path."""
    path = Path(staging) / MODEL_CARD
    path.write_text(render_model_card(manifest_dict, exam_report_dict), encoding="utf-8")
    return path


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: a real copy
        shutil.copy2(src, dst)


def stage_artifact(
    source: Path,
    staging: Path,
    *,
    kind: str,
    manifest_dict: Mapping[str, Any],
    exam_report_dict: Mapping[str, Any],
) -> Path:
    """Lay out a fresh `staging` folder: the `kind`'s files (weights, config, tokenizer) at its root, beside the
    manifest, the exam report and the model card. A weights folder holding one of `PUBLISHER_FILES` is refused: the
    tag would ship one of the two files under that name."""
    staging, source = Path(staging), Path(source)
    clashes = sorted(name for name in PUBLISHER_FILES if (source / name).exists())
    if clashes:
        raise PublishError(
            f"the {kind} folder {source} holds {clashes}, which the publisher writes at the tag's root; remove them "
            "where that folder is written (the crucible's adapter, the alchemist's merged model), then run the job "
            "again"
        )
    shutil.rmtree(staging, ignore_errors=True)
    try:
        # hard links where the job folder and staging share a file system: an 8B model is staged without 16 GB more
        # disk. The weights are never written in place (every stage writes a new folder and renames it), and the
        # registry's verified copy is made from staging, so a link is as good as a copy here.
        shutil.copytree(source, staging, copy_function=_link_or_copy)
        (staging / MANIFEST_FILE).write_text(
            yaml.safe_dump(_redacted(dict(manifest_dict)), sort_keys=False), encoding="utf-8"
        )
        report = {k: v for k, v in exam_report_dict.items() if k != "report_path"}
        (staging / EXAM_REPORT_FILE).write_text(
            json.dumps(report, indent=2, sort_keys=True), encoding="utf-8"
        )
        write_model_card(staging, manifest_dict, exam_report_dict)
    except (
        OSError
    ) as e:  # a full disk: one short line (copytree's own error lists every file), no half staging
        shutil.rmtree(staging, ignore_errors=True)
        raise PublishError(
            f"staging the {kind} into {staging} failed: {short_error(e)}; the staging folder was removed (free "
            "space, then run the publish again)"
        ) from e
    return staging


def weights_of(listing: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The weights of a tag listing ({path in the tag: SHA256}), keyed by their path inside the weights folder, and
    that folder's prefix in the tag: "" (the root, minus `PUBLISHER_FILES`) or, for a tag published before the
    root layout (no weights file at its root), "adapter/" or "merged_model/"."""
    at_root = {name: digest for name, digest in listing.items() if name not in PUBLISHER_FILES}
    if not any("/" not in name for name in at_root):
        for folder in LEGACY_WEIGHT_FOLDERS:
            prefix = folder + "/"
            legacy = {n[len(prefix) :]: d for n, d in listing.items() if n.startswith(prefix)}
            if legacy:
                return prefix, legacy
    return "", at_root


def _redacted(value: Any) -> Any:
    """`value` with every URL in its strings redacted. A validated manifest holds no credential (the manifest refuses
    a registry or webhook URL with one), so the foundry's own jobs publish their manifest unchanged; this keeps any
    other caller's dict from publishing a token in `manifest.yaml`."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value
