"""The environment fingerprint recorded with each lot: its fields, the package-set hash, the GPU line, no heavy imports."""

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from foundry_assets.intake.fingerprint import (
    KEY_PACKAGES,
    NOT_INSTALLED,
    environment_fingerprint,
    gpu_description,
    installed,
    packages_sha256,
)


def test_fingerprint_names_python_packages_node_and_key_versions() -> None:
    fingerprint = environment_fingerprint().to_dict()
    assert set(fingerprint) == {
        "python",
        "platform",
        "hostname",
        "packages_sha256",
        "packages",
        "versions",
        "gpu",
    }
    assert fingerprint["python"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")
    assert fingerprint["hostname"] and fingerprint["platform"]
    lines = installed()
    assert fingerprint["packages"] == len(lines) and fingerprint["packages_sha256"] == packages_sha256(lines)
    assert (
        f"pytest=={metadata.version('pytest')}" in lines
        and "dagster==" + metadata.version("dagster") in lines
    )
    assert list(fingerprint["versions"]) == list(KEY_PACKAGES)
    assert fingerprint["versions"]["dagster"] == metadata.version("dagster")
    assert fingerprint["versions"]["torch"] == metadata.version("torch")


def test_package_hash_changes_with_the_set_and_not_with_its_order() -> None:
    lines = installed()
    assert packages_sha256(lines) == packages_sha256(list(reversed(lines)))
    assert packages_sha256(lines) != packages_sha256([*lines, "one-more==1.0"])
    bumped = [line if not line.startswith("pytest==") else "pytest==0.0.1" for line in lines]
    assert packages_sha256(lines) != packages_sha256(bumped)


def test_fingerprint_imports_no_heavy_library() -> None:
    """The raw_data step (and the code location) must not load torch to describe the environment."""
    code = (
        "import sys\n"
        "from foundry_assets.intake.fingerprint import environment_fingerprint\n"
        "environment_fingerprint()\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'unsloth', 'mergekit') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "[]"


def _nvidia_smi(folder: Path, script: str) -> None:
    exe = folder / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\n{script}\n")
    exe.chmod(0o755)


def test_gpu_line_groups_cards_by_name_and_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _nvidia_smi(
        tmp_path,
        'printf "NVIDIA H200, 570.86.15\\nNVIDIA H200, 570.86.15\\nNVIDIA L4, 570.86.15\\n"',
    )
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu_description() == "2 × NVIDIA H200 (driver 570.86.15); 1 × NVIDIA L4 (driver 570.86.15)"


def test_gpu_line_says_none_without_nvidia_smi_and_why_when_it_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu_description() == "none"
    _nvidia_smi(tmp_path, 'echo "NVIDIA-SMI has failed" >&2; exit 9')
    line = gpu_description()
    assert line.startswith("unknown (nvidia-smi:") and "exit status 9" in line


def test_a_missing_key_package_is_named_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    real = metadata.version

    def version(name: str) -> str:
        if name == "unsloth":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    assert environment_fingerprint().versions["unsloth"] == NOT_INSTALLED
