"""The environment a lot was made in: Python, the installed packages, the key libraries' versions, the node and its GPUs.

Recorded with the lot (the `job_accepted` record and the raw_data metadata) so a batch can be reproduced, or shown
not to be reproducible, on another node. It is not part of the lot number: the same data and manifest keep one lot
across nodes, and the fingerprint says where each run of it differed. Cheap on purpose: package versions come from
`importlib.metadata` (nothing is imported: the code location and the raw_data step never load torch), the GPUs from
`nvidia-smi` with a short timeout.
"""

import hashlib
import platform
import re
import shutil
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from importlib import metadata

KEY_PACKAGES = ("torch", "transformers", "peft", "trl", "unsloth", "dagster", "mergekit")
"""The libraries whose versions decide what a run computes; each is named in the fingerprint."""
NOT_INSTALLED = "not installed"
NVIDIA_SMI_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class EnvironmentFingerprint:
    python: str
    """The version and implementation, e.g. `3.11.9 (cpython)`."""
    platform: str
    hostname: str
    packages_sha256: str
    """SHA256 of the installed distributions as sorted `name==version` lines: equal on two nodes iff the sets are."""
    packages: int
    versions: dict[str, str]
    """Each of KEY_PACKAGES: its installed version, or NOT_INSTALLED."""
    gpu: str
    """Each kind of GPU with its driver and count (`1 × NVIDIA H200 (driver 570.86.15)`), or `none`."""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _canonical(name: str) -> str:
    """PEP 503's normalised name, so `Foo_Bar` and `foo-bar` are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> list[str]:
    """Every distribution on sys.path as `name==version`, sorted and without repeats (pip freeze's set)."""
    found = {
        f"{_canonical(dist.metadata['Name'])}=={dist.version}"
        for dist in metadata.distributions()
        if dist.metadata["Name"]
    }
    return sorted(found)


def packages_sha256(lines: Iterable[str]) -> str:
    return hashlib.sha256("".join(f"{line}\n" for line in sorted(lines)).encode("utf-8")).hexdigest()


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return NOT_INSTALLED


def gpu_description() -> str:
    """The node's NVIDIA GPUs as `nvidia-smi` lists them, grouped by name and driver; `none` without nvidia-smi or
    GPUs; what went wrong when nvidia-smi is there but does not answer (the record says so, not `none`)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "none"
    try:
        done = subprocess.run(
            [exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown (nvidia-smi: {e})"
    cards = Counter(
        tuple(part.strip() for part in line.rsplit(",", 1))
        for line in done.stdout.splitlines()
        if line.strip()
    )
    if not cards:
        return "none"
    return "; ".join(
        f"{count} × {card[0]}" + (f" (driver {card[1]})" if len(card) > 1 else "")
        for card, count in sorted(cards.items())
    )


def environment_fingerprint() -> EnvironmentFingerprint:
    """This process's environment, as recorded with the lot."""
    lines = installed()
    return EnvironmentFingerprint(
        python=platform.python_version() + f" ({sys.implementation.name})",
        platform=platform.platform(),
        hostname=socket.gethostname(),
        packages_sha256=packages_sha256(lines),
        packages=len(lines),
        versions={name: _version(name) for name in KEY_PACKAGES},
        gpu=gpu_description(),
    )
