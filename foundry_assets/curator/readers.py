"""Read a drop (JSONL, JSON, Parquet or CSV) into validated records; a bad record goes to quarantine, never silently away.

Every non-blank line (JSONL) or row (Parquet, CSV) is one record; a ``.json`` file is either a top-level array of
objects (how Alpaca-style datasets ship; one record per element) or JSONL. A record that cannot be used (malformed JSON,
not an object, a missing or empty field, an unknown or ambiguous shape, text that is not valid Unicode: bytes that are
not UTF-8, or an escaped lone surrogate such as ``"\\ud83d"``, which is valid JSON but cannot be written as UTF-8) is
quarantined with its line number and the reason, and the rest of the drop goes on. Line numbers are 1-based: the
physical line for JSONL and CSV (the header is line 1, a quoted field spanning lines counts from the row's first
line), the line an array element starts on for a JSON array, the row number for Parquet.

Parquet and CSV carry columns, not objects: a null cell (Parquet) or an empty cell (CSV) is treated as an absent key,
so one file may hold columns of several shapes. A CSV ``messages`` cell holds the JSON list of turns; a Parquet
``messages`` column is a list of {role, content} structs.
"""

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from foundry_assets.curator.formats import Record, detect_shape
from foundry_assets.errors import DataError

FileFormat = Literal["jsonl", "json", "parquet", "csv"]
SUFFIXES: dict[str, FileFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
}
_RAW_CHARS = 300
MAX_ARRAY_BYTES = 1 << 30
"""Largest JSON-array file read (1 GiB): unlike JSONL, an array is parsed as one document, so its objects are all
built before the first record is checked; a larger drop ships as JSONL (one object a line)."""


@dataclass(frozen=True)
class Quarantined:
    """A record that was set aside: where it was, why, and (the start of) what it held."""

    line: int
    reason: str
    raw: str

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "reason": self.reason, "raw": self.raw}


@dataclass
class ReadResult:
    """The records that parsed, those quarantined, and the blank lines skipped (not records)."""

    path: Path
    file_format: FileFormat
    records: list[Record] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    blank: int = 0

    @property
    def read(self) -> int:
        """Records read: parsed + quarantined (blank lines are not records)."""
        return len(self.records) + len(self.quarantined)


def file_format_of(path: Path) -> FileFormat:
    """The drop's format from its suffix; DataError lists the known ones."""
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(SUFFIXES))
        raise DataError(f"{path}: unknown file type {path.suffix!r}; a drop is one of {known}")
    return fmt


def _clip(text: str) -> str:
    """The start of `text`, writable as UTF-8 (a lone surrogate or undecodable byte shown as its escape)."""
    text = text if len(text) <= _RAW_CHARS else text[: _RAW_CHARS - 1] + "…"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _not_unicode(obj: Any) -> str | None:
    """Why `obj` cannot be written as UTF-8 (a key or string value holding a lone surrogate: a JSON escape such as
    \\ud83d without its pair, or a byte that was not UTF-8), naming the field; None when every string is valid text."""
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
        for text in (where, value) if isinstance(value, str) else (where,):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                bad = text[e.start].encode("utf-8", "backslashreplace").decode()
                return (
                    f"field {where!r} is not valid Unicode text ({bad} at character {e.start}: a lone surrogate "
                    "escape or a byte that is not UTF-8); fix or remove that character"
                )
    return None


def _take(result: ReadResult, line: int, obj: Any, raw: str) -> None:
    """Validate one object and file it as a record or in quarantine."""
    if not isinstance(obj, dict):
        result.quarantined.append(
            Quarantined(line, f"each record must be a JSON object, got {type(obj).__name__}", _clip(raw))
        )
        return
    invalid = _not_unicode(obj)
    if invalid is not None:
        result.quarantined.append(Quarantined(line, invalid, _clip(raw)))
        return
    try:
        shape = detect_shape(obj)
    except DataError as e:
        result.quarantined.append(Quarantined(line, str(e), _clip(raw)))
        return
    result.records.append(Record(line=line, shape=shape, data=obj))


def _read_jsonl(raw: bytes, result: ReadResult) -> None:
    for number, line_bytes in enumerate(raw.splitlines(), start=1):
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError as e:
            text = line_bytes.decode("utf-8", errors="replace")
            result.quarantined.append(
                Quarantined(number, f"not valid UTF-8 ({e.reason} at byte {e.start})", _clip(text))
            )
            continue
        if number == 1:
            line = line.removeprefix("\ufeff")
        if not line.strip():
            result.blank += 1
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            result.quarantined.append(
                Quarantined(number, f"malformed JSON ({e.msg} at column {e.colno})", _clip(line))
            )
            continue
        _take(result, number, obj, line)


_ARRAY_START = re.compile(rb"(?:\xef\xbb\xbf)?\s*\[")
_SPACE = re.compile(r"\s*")


def _array_error(result: ReadResult, text: str, pos: int, what: str) -> DataError:
    line = text.count("\n", 0, pos) + 1
    column = pos - text.rfind("\n", 0, pos)
    return DataError(
        f"{result.path}:{line}: {what} at column {column} of the JSON array; fix the file (or ship it as JSONL, "
        "one object a line, where a bad line is quarantined instead)"
    )


def _read_json(raw: bytes, result: ReadResult) -> None:
    """A top-level JSON array: each element is a record, numbered by the line it starts on; anything else is JSONL.

    Bytes that are not UTF-8 are kept as surrogate escapes, so only the element holding them is quarantined. A
    malformed array cannot be resynchronised after the error: the whole file is refused, naming the line."""
    if not _ARRAY_START.match(raw):
        _read_jsonl(raw, result)
        return
    if len(raw) > MAX_ARRAY_BYTES:
        raise DataError(
            f"{result.path}: a JSON array of {len(raw):,} bytes is over the {MAX_ARRAY_BYTES:,}-byte limit for "
            "arrays; convert it to JSONL (e.g. `jq -c '.[]' data.json > data.jsonl`), which is read line by line"
        )
    text = raw.decode("utf-8-sig", "surrogateescape")
    decoder = json.JSONDecoder()
    pos = _SPACE.match(text, text.index("[") + 1).end()  # type: ignore[union-attr]
    line, counted = 1, 0
    while pos < len(text) and text[pos] != "]":
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise _array_error(result, text, e.pos, f"malformed JSON ({e.msg})") from None
        line += text.count("\n", counted, pos)
        counted = pos
        _take(result, line, obj, text[pos:end])
        pos = _SPACE.match(text, end).end()  # type: ignore[union-attr]
        if pos < len(text) and text[pos] == ",":
            pos = _SPACE.match(text, pos + 1).end()  # type: ignore[union-attr]
        elif pos < len(text) and text[pos] != "]":
            raise _array_error(result, text, pos, "expected ',' or ']' after an element")
    if pos >= len(text) or text[pos + 1 :].strip():
        raise _array_error(result, text, min(pos, len(text)), "the array is not closed by a final ']'")


def _read_csv(raw: bytes, result: ReadResult) -> None:
    text = raw.decode("utf-8-sig", "surrogateescape")  # a row holding bytes that are not UTF-8 is quarantined
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as e:
        raise DataError(f"{result.path}:1: unreadable CSV header ({e})") from None
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            result.quarantined.append(Quarantined(start, f"malformed CSV ({e})", ""))
            start = reader.line_num + 1
            continue
        line, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            result.blank += 1
            continue
        raw_row = ",".join(row)
        if len(row) != len(header):
            result.quarantined.append(
                Quarantined(
                    line, f"has {len(row)} cells but the header has {len(header)} columns", _clip(raw_row)
                )
            )
            continue
        obj: dict[str, Any] = {k: v for k, v in zip(header, row, strict=True) if v != ""}
        if isinstance(obj.get("messages"), str):
            try:
                obj["messages"] = json.loads(obj["messages"])
            except json.JSONDecodeError as e:
                result.quarantined.append(
                    Quarantined(
                        line, f"column 'messages' is not a JSON list of turns ({e.msg})", _clip(raw_row)
                    )
                )
                continue
        # CSV cells are strings: a safety record's `harmful` column reads "true"/"false" (any case) as JSON would
        harmful = obj.get("harmful")
        if isinstance(harmful, str) and harmful.strip().lower() in ("true", "false"):
            obj["harmful"] = harmful.strip().lower() == "true"
        _take(result, line, obj, raw_row)


def _read_parquet(path: Path, result: ReadResult) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    number = 0
    for batch in parquet.iter_batches(batch_size=8192):
        for row in batch.to_pylist():
            number += 1
            obj = {k: v for k, v in row.items() if v is not None}
            _take(result, number, obj, json.dumps(obj, ensure_ascii=False, default=str))


def read_drop(path: Path | str, file_format: FileFormat | None = None) -> ReadResult:
    """Read every record of a drop; unusable ones are quarantined. DataError only when the file itself is unusable."""
    path = Path(path)
    fmt = file_format or file_format_of(path)
    result = ReadResult(path=path, file_format=fmt)
    if fmt == "parquet":
        if not path.is_file():
            raise DataError(f"{path}: cannot read the data drop (no such file)")
        _read_parquet(path, result)
        return result
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read the data drop ({e.strerror or e})") from e
    if fmt == "csv":
        _read_csv(raw, result)
    elif fmt == "json":
        _read_json(raw, result)
    else:
        _read_jsonl(raw, result)
    return result


def read_jsonl(path: Path) -> list[Record]:
    """Strict reader (for callers that want all or nothing): the first unusable line is a DataError."""
    result = read_drop(Path(path), "jsonl")
    if result.quarantined:
        first = result.quarantined[0]
        raise DataError(f"{path}:{first.line}: {first.reason}")
    if not result.records:
        raise DataError(f"{path}: the data drop is empty (no JSON records)")
    return result.records
