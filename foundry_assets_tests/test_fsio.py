"""fsio: every kept write is whole or absent."""

import stat
from pathlib import Path

import pytest

from foundry_assets import fsio


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = fsio.write_text(tmp_path / "a" / "report.json", "old")
    with pytest.raises(RuntimeError), fsio.atomic_file(target) as handle:
        handle.write(b"half")
        raise RuntimeError("disk went away")
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]


def test_write_files_renames_none_until_all_are_written(tmp_path: Path) -> None:
    first, second = tmp_path / "train.jsonl", tmp_path / "missing" / "test.jsonl"
    with pytest.raises(FileNotFoundError):
        fsio.write_files({first: b"a\n", second: b"b\n"})
    assert list(tmp_path.iterdir()) == []
    fsio.write_files({first: fsio.jsonl_bytes([{"x": 1}, {"y": "é"}])})
    assert fsio.read_jsonl(first) == [{"x": 1}, {"y": "é"}]


def test_build_dir_swaps_whole_folders_and_cleans_up_a_failed_build(tmp_path: Path) -> None:
    dest = tmp_path / "merged"
    fsio.build_dir(dest, lambda tmp: (tmp / "v1").write_text("1"))

    def broken(tmp: Path) -> None:
        (tmp / "v2").write_text("2")
        raise OSError("out of space")

    with pytest.raises(OSError, match="out of space"):
        fsio.build_dir(dest, broken)
    assert [p.name for p in tmp_path.iterdir()] == ["merged"] and (dest / "v1").is_file()
    fsio.build_dir(dest, lambda tmp: (tmp / "v2").write_text("2"))
    assert [p.name for p in dest.iterdir()] == ["v2"] and [p.name for p in tmp_path.iterdir()] == ["merged"]
    with pytest.raises(OSError):
        fsio.build_dir(dest, lambda tmp: (tmp / "v3").write_text("3"), replace=False)
    assert [p.name for p in dest.iterdir()] == ["v2"]


def test_copy_file_copies_bytes(tmp_path: Path) -> None:
    source = fsio.write_bytes(tmp_path / "data.jsonl", b"\x00" * 3_000_000)
    assert fsio.copy_file(source, tmp_path / "raw" / "data.jsonl").read_bytes() == source.read_bytes()


def test_atomic_writes_give_a_new_file_the_mode_a_plain_open_gives(tmp_path: Path) -> None:
    """`mkstemp` alone makes 0600 files, unreadable to the other users of a node or a registry."""
    (tmp_path / "plain.json").write_text("{}")
    expected = stat.S_IMODE((tmp_path / "plain.json").stat().st_mode)
    fsio.write_text(tmp_path / "atomic.json", "{}")
    fsio.write_files({tmp_path / "both.json": b"{}"})
    fsio.copy_file(tmp_path / "plain.json", tmp_path / "copy.json")
    for name in ("atomic.json", "both.json", "copy.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected == fsio.FILE_MODE, name
