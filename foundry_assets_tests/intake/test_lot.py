from pathlib import Path

import pytest

from foundry_assets.errors import DataError
from foundry_assets.hashing import sha256_file, sha256_tree
from foundry_assets.intake.lot import compute_lot
from foundry_assets.manifest import parse_manifest

DOC = {
    "job_id": "lot-test",
    "base_model": "b",
    "method_config": {"type": "dora"},
    "publish_target": {"registry": "/tmp/r", "tag": "v1"},
}


def test_one_byte_change_to_the_data_changes_the_lot_number(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_bytes(b'{"instruction": "a", "output": "b"}\n' * 1000)
    manifest = parse_manifest(DOC)
    before = compute_lot(data, manifest)
    raw = bytearray(data.read_bytes())
    raw[5000] ^= 0x01
    data.write_bytes(bytes(raw))
    after = compute_lot(data, manifest)
    assert before.manifest_sha256 == after.manifest_sha256
    assert before.dataset_sha256 != after.dataset_sha256
    assert before.lot_number != after.lot_number


def test_manifest_change_changes_the_lot_number(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("{}\n")
    a = compute_lot(data, parse_manifest(DOC))
    b = compute_lot(data, parse_manifest({**DOC, "method_config": {"type": "dora", "rank": 32}}))
    assert a.dataset_sha256 == b.dataset_sha256 and a.lot_number != b.lot_number


def test_streamed_hash_matches_hashlib_on_multi_chunk_file(tmp_path: Path) -> None:
    import hashlib

    blob = bytes(range(256)) * 9000  # > 2 MiB: several 1 MiB chunks
    (tmp_path / "big.bin").write_bytes(blob)
    assert sha256_file(tmp_path / "big.bin") == hashlib.sha256(blob).hexdigest()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x").write_text("x")
    assert list(sha256_tree(tmp_path)) == ["big.bin", "sub/x"]


def test_missing_data_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.path"):
        compute_lot(tmp_path / "nope.jsonl", parse_manifest(DOC))
