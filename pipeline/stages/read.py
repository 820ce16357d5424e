"""Read candidates from URL lists: Parquet, JSONL, CSV or TSV, like img2dataset's
--input_format / --url_col / --caption_col.

The core is `read_rows` (rows of one file, as dicts) and `make_candidate` (one row to a
Record or a dropped Record). The Beam side expands file patterns and reads each file in
one DoFn: files are the unit of parallelism, and row numbers stay exact.
"""
from __future__ import annotations

import csv
import sys
import io
import json
import os
from dataclasses import dataclass
from typing import Iterator, Optional

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from openwit.pipeline.common.flags import opt
from openwit.pipeline.common.urls import SCHEMES
from openwit.schemas.record import Record, drop, make_uid

FORMATS = ("parquet", "jsonl", "csv", "tsv", "warc", "wat")
# Marker keys a row may carry besides its columns (row readers and stages/extract.py set them):
MALFORMED = "__malformed__"  # why the row is unusable; it becomes a malformed_row drop
SOURCE = "__source__"  # where inside the file it came from, e.g. the WARC record id
ROW_MARKERS = (MALFORMED, SOURCE)
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # the 128 KiB default would end a run on one long caption


@dataclass(frozen=True)
class ReadConfig:
    input_format: Optional[str] = opt(None, "default: from the extension", choices=FORMATS)
    url_col: str = opt("url")
    caption_col: str = opt("caption")
    page_url_col: str = opt("page_url")


def detect_format(path: str) -> str:
    name = path.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for fmt, exts in (("parquet", (".parquet",)), ("jsonl", (".jsonl", ".json")), ("csv", (".csv",)),
                      ("tsv", (".tsv", ".txt")), ("wat", (".wat", ".warc.wat")), ("warc", (".warc", ".arc"))):
        if name.endswith(exts):
            return fmt
    raise ValueError(f"cannot tell the format of {path!r}; pass --input-format ({', '.join(FORMATS)})")


def read_rows(path: str, fmt: str, cfg: ReadConfig) -> Iterator[dict]:
    """Yield the rows of one input file as dicts, in file order."""
    if fmt in ("warc", "wat"):
        yield from _archive_rows(path, fmt, cfg)
        return
    with FileSystems.open(path) as raw:  # decompresses .gz by extension
        data = raw.read()
    if fmt == "parquet":
        table = pq.read_table(io.BytesIO(data))
        _require_url_column(path, table.column_names, cfg)
        yield from table.to_pylist()
        return
    text = data.decode("utf-8-sig", errors="replace")  # -sig: a BOM must not rename the first column
    if fmt == "jsonl":
        # Only "\n" ends a line: str.splitlines() would also split on U+2028, U+0085, \x0c ...
        # which json.dumps(ensure_ascii=False) leaves raw inside strings.
        for line_number, line in enumerate(text.split("\n")):
            if line.strip():
                yield _parse_json_line(line, path, line_number)
        return
    if fmt not in ("csv", "tsv"):
        raise ValueError(f"unknown input format {fmt!r}; expected one of {FORMATS}")
    yield from _delimited_rows(text, path, fmt, cfg)


def _archive_rows(path: str, fmt: str, cfg: ReadConfig) -> Iterator[dict]:
    """WARC/WAT candidates as rows under the configured column names. warcio reads the
    per-record gzip members itself, so the file is opened without decompression."""
    from apache_beam.io.filesystem import CompressionTypes

    from openwit.pipeline.stages import extract

    rows = extract.warc_rows if fmt == "warc" else extract.wat_rows
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        for row in rows(raw):
            renamed = {cfg.url_col: row.get("url"), cfg.caption_col: row.get("caption"),
                       cfg.page_url_col: row.get("page_url")}
            yield {**renamed, **{k: v for k, v in row.items() if k in ROW_MARKERS}}


def _delimited_rows(text: str, path: str, fmt: str, cfg: ReadConfig) -> Iterator[dict]:
    # TSV has no quoting convention: a caption starting with '"' must not swallow rows.
    options = {"delimiter": ",", "strict": True} if fmt == "csv" else {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    reader = csv.DictReader(io.StringIO(text), **options)
    _require_url_column(path, reader.fieldnames or [], cfg)
    try:
        yield from reader
    except csv.Error as err:
        raise ValueError(f"{path}: malformed {fmt} near line {reader.line_num}: {err}") from None


def _require_url_column(path: str, columns, cfg: ReadConfig) -> None:
    if cfg.url_col not in columns:
        raise ValueError(f"{path}: no url column {cfg.url_col!r} (columns: {list(columns)[:20]}); pass --url-col")


def _parse_json_line(line: str, path: str, line_number: int) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        # Kept as a row so that the candidate still gets a ledger record.
        return {MALFORMED: f"{os.path.basename(path)} line {line_number + 1}: {err.msg}"}
    return row if isinstance(row, dict) else {MALFORMED: f"line {line_number + 1} is not a JSON object"}


def _text(value) -> str:
    """A field as clean text: bytes decoded, NaN and non-scalars empty, lone surrogates
    (invalid UTF-8 that JSON can carry) replaced so every later stage can encode it."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    elif isinstance(value, float) and value != value:
        value = ""
    elif not isinstance(value, (str, int, float)):
        value = ""
    text = str(value).encode("utf-8", errors="replace").decode("utf-8")
    return text.replace("\x00", " ").strip()


def make_candidate(row: dict, source_name: str, row_number: int, cfg: ReadConfig) -> Record:
    """One input row to a candidate; rows without a usable url or caption are dropped."""
    url = _text(row.get(cfg.url_col))
    caption = _text(row.get(cfg.caption_col))
    record = Record(
        uid=make_uid(source_name, row_number),
        url=url,
        caption=caption,
        page_url=_text(row.get(cfg.page_url_col)) or None,
        source=f"{source_name}:{row_number}" + (f" {row[SOURCE]}" if row.get(SOURCE) else ""),
    )
    if MALFORMED in row:
        return drop(record, "malformed_row", row[MALFORMED])
    if not url:
        return drop(record, "missing_url")
    if not caption:
        return drop(record, "missing_caption")
    scheme, separator, _ = url.partition("://")
    if not separator or scheme.lower() not in SCHEMES:
        return drop(record, "unsupported_scheme", url.split(":", 1)[0][:20])
    return record


def read_candidates(path: str, source_name: str, cfg: ReadConfig) -> Iterator[Record]:
    fmt = cfg.input_format or detect_format(path)
    for row_number, row in enumerate(read_rows(path, fmt, cfg)):
        yield make_candidate(row, source_name, row_number, cfg)


def expand_inputs(patterns: list[str]) -> list[tuple[str, str]]:
    """(path, source name) for every file matched; the source name is the path relative to
    the pattern's directory so that uids do not depend on where the input lives."""
    files = []
    for pattern in patterns:
        matches = FileSystems.match([pattern])[0].metadata_list
        if not matches:
            raise FileNotFoundError(f"no input file matches {pattern!r}")
        base = os.path.dirname(_before_glob(pattern))
        for meta in sorted(matches, key=lambda m: m.path):
            files.append((meta.path, os.path.relpath(meta.path, base or ".")))
    names = [name for _, name in files]
    if len(set(names)) != len(names):
        raise ValueError("two input files share a source name; their uids would collide")
    return files


def _before_glob(pattern: str) -> str:
    cut = min((i for i, c in enumerate(pattern) if c in "*?["), default=len(pattern))
    return pattern[:cut]
