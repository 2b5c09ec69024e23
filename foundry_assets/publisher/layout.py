"""The published artifact's layout: the weights at the tag's root, beside the publisher's own four files.

A tag is shaped as the Hugging Face ecosystem loads it: `PeftModel.from_pretrained(base, TAG)` reads an adapter's
`adapter_config.json`/`adapter_model.safetensors` and `AutoModelForCausalLM.from_pretrained(TAG)` a merged model's
`config.json`/`*.safetensors` from the tag folder itself. Beside them sit the publisher's files (`PUBLISHER_FILES`):
the training manifest, the exam report, the model card (README.md, the tag's only card) and `MANIFEST.sha256`, which
`push_artifact` adds. Tags published before this layout hold the weights in an `adapter/` or `merged_model/` folder
(`base.LEGACY_WEIGHT_FOLDERS`); `base.weights_of` reads either. Everything here is deterministic (no timestamps, sorted keys),
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
from foundry_assets.intake.lot import LotNumber
from foundry_assets.publisher.base import (
    EXAM_REPORT_FILE,
    MANIFEST_FILE,
    PUBLISHER_FILES,
    short_error,
)
from foundry_assets.publisher.card import write_model_card
from foundry_assets.redact import redact


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
    lot: LotNumber,
    trained: Mapping[str, Any] | None = None,
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
        write_model_card(
            staging, manifest_dict, exam_report_dict, kind=kind, weights=source, lot=lot, trained=trained
        )
    except (
        OSError
    ) as e:  # a full disk: one short line (copytree's own error lists every file), no half staging
        shutil.rmtree(staging, ignore_errors=True)
        raise PublishError(
            f"staging the {kind} into {staging} failed: {short_error(e)}; the staging folder was removed (free "
            "space, then run the publish again)"
        ) from e
    return staging


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
