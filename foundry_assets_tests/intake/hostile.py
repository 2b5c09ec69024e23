"""Hostile drops (issue 13): each a copy of a valid drop broken one way that once stopped the drop sensor for every
drop, cost it gigabytes, or put what it read into its cursor; with the words its rejection must hold.

The sensor's fault-injection test runs one tick over all of them beside a good drop.
"""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import yaml

SECRET = "fAkEsEcReT-0b9e7c1d-never-in-a-reason"
"""In a fake credentials file outside the drops; a drop links to it, and it must appear nowhere."""

CREDENTIALS = f"[default]\naws_access_key_id = AKIAFAKEFAKEFAKE\naws_secret_access_key = {SECRET}\n"
"""INI, not YAML: parsing it fails on line 2, and PyYAML's error snippet used to quote that line."""


def alias_bomb() -> bytes:
    """The "billion laughs" in 350 bytes: nine aliases of nine aliases, eight deep, under job_id (9^9 strings)."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefg", "bcdefgh", strict=True):
        lines.append(f"{name}: &{name} [{','.join([f'*{previous}'] * 9)}]")
    lines.append(f"job_id: [{','.join(['*h'] * 9)}]")
    return ("\n".join(lines) + "\n").encode()


def _write(name: str, content: bytes) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        (folder / name).write_bytes(content)

    return write


def _append(name: str, content: bytes) -> Callable[[Path], None]:
    def append(folder: Path) -> None:
        with open(folder / name, "ab") as handle:
            handle.write(content)

    return append


def _link_to(name: str, target: Path) -> Callable[[Path], None]:
    def link(folder: Path) -> None:
        (folder / name).unlink()
        (folder / name).symlink_to(target)

    return link


def _huge_input(folder: Path) -> None:
    document = yaml.safe_load((folder / "manifest.yaml").read_text())
    document["base_model"] = ["x" * 10] * 4000  # a list where a name belongs: pydantic quotes it (48 KB)
    (folder / "manifest.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def hostile_cases(credentials: Path) -> dict[str, tuple[Callable[[Path], None], str]]:
    """Each hostile drop's name: how a valid drop is broken, and a phrase its rejection reason holds."""
    return {
        "alias-bomb": (_write("manifest.yaml", alias_bomb()), "alias *a refused"),
        "deep-manifest": (_write("manifest.yaml", b"job_id: " + b"[" * 2000), "nesting deeper than 32"),
        "huge-manifest": (_append("manifest.yaml", (b"#" * 1000 + b"\n") * 70), "larger than 64 KiB"),
        "manifest-not-utf8": (_append("manifest.yaml", b"# caf\xe9\n"), "is not UTF-8 text: byte 0xe9"),
        "huge-number": (_append("manifest.yaml", b"seed: " + b"1" * 5000 + b"\n"), "cannot be read"),
        "unhashable-key": (_write("manifest.yaml", b"{[a]: 1}\n"), "unhashable key"),
        "huge-input": (_huge_input, "base_model"),
        "manifest-symlink": (_link_to("manifest.yaml", credentials), "manifest.yaml leads outside the drop"),
        "data-symlink": (_link_to("data.jsonl", credentials), "'data.jsonl' leads outside the drop"),
        "data-not-utf8": (_append("data.jsonl", b'{"instruction": "caf\xe9", "output": "b"}\n'), "not UTF-8"),
        "data-deep": (_append("data.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n"), "nests too deep"),
        "data-huge-number": (_append("data.jsonl", b'{"n": ' + b"1" * 5000 + b"}\n"), "cannot be read"),
    }


def make_hostile_drops(inbox: Path, good: Path, credentials: Path) -> dict[str, str]:
    """Copy the valid drop folder `good` into `inbox` once per hostile case (its job_id the drop's name), broken that
    case's way, with the fake credentials file written at `credentials` (outside `inbox`). Returns each drop's name
    and the phrase its rejection holds."""
    credentials.write_text(CREDENTIALS)
    expected = {}
    for name, (breaking, phrase) in hostile_cases(credentials).items():
        folder = inbox / name
        shutil.copytree(good, folder)
        document = yaml.safe_load((folder / "manifest.yaml").read_text())
        (folder / "manifest.yaml").write_text(yaml.safe_dump({**document, "job_id": name}, sort_keys=False))
        breaking(folder)
        expected[name] = phrase
    return expected


def assert_secret_absent(*texts: object) -> None:
    """The fake secret is in none of `texts` (each rendered with str, a dict or list as JSON)."""
    for text in texts:
        rendered = text if isinstance(text, str) else json.dumps(text, default=str)
        assert SECRET not in rendered
