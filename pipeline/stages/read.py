"""Read candidates from URL lists: Parquet, JSONL, CSV or TSV, like img2dataset's
--input_format / --url_col / --caption_col.

The core is `read_rows` (rows of one file, as dicts) and `make_candidate` (one row to a
Record or a dropped Record). The Beam side expands file patterns and reads each file in
one DoFn: files are the unit of parallelism, and row numbers stay exact.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from typing import Iterator, Optional

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from openwit.schemas.record import Record, drop, make_uid

FORMATS = ("parquet", "jsonl", "csv", "tsv")


@dataclass(frozen=True)
class ReadConfig:
    input_format: Optional[str] = None  # None: from the file extension
    url_col: str = "url"
    caption_col: str = "caption"
    page_url_col: str = "page_url"


def detect_format(path: str) -> str:
    name = path.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for fmt, exts in (("parquet", (".parquet",)), ("jsonl", (".jsonl", ".json")), ("csv", (".csv",)),
                      ("tsv", (".tsv", ".txt"))):
        if name.endswith(exts):
            return fmt
    raise ValueError(f"cannot tell the format of {path!r}; pass --input-format ({', '.join(FORMATS)})")


def read_rows(path: str, fmt: str) -> Iterator[dict]:
    """Yield the rows of one input file as dicts, in file order."""
    with FileSystems.open(path) as raw:  # decompresses .gz by extension
        data = raw.read()
    if fmt == "parquet":
        yield from pq.read_table(io.BytesIO(data)).to_pylist()
        return
    text = data.decode("utf-8", errors="replace")
    if fmt == "jsonl":
        for line_number, line in enumerate(text.splitlines()):
            if line.strip():
                yield _parse_json_line(line, path, line_number)
        return
    if fmt not in ("csv", "tsv"):
        raise ValueError(f"unknown input format {fmt!r}; expected one of {FORMATS}")
    yield from csv.DictReader(io.StringIO(text), delimiter="," if fmt == "csv" else "\t")


def _parse_json_line(line: str, path: str, line_number: int) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        # Kept as a row so that the candidate still gets a ledger record (missing_url).
        return {"__error__": f"{os.path.basename(path)} line {line_number + 1}: {err.msg}"}
    return row if isinstance(row, dict) else {"__error__": "json line is not an object"}


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def make_candidate(row: dict, source_name: str, row_number: int, cfg: ReadConfig) -> Record:
    """One input row to a candidate; rows without a usable url or caption are dropped."""
    url = _text(row.get(cfg.url_col))
    caption = _text(row.get(cfg.caption_col))
    record = Record(
        uid=make_uid(source_name, row_number),
        url=url,
        caption=caption,
        page_url=_text(row.get(cfg.page_url_col)) or None,
        source=f"{source_name}:{row_number}",
    )
    if not url:
        return drop(record, "missing_url", row.get("__error__", ""))
    if not caption:
        return drop(record, "missing_caption")
    if not url.lower().startswith(("http://", "https://")):
        return drop(record, "unsupported_scheme", url.split(":", 1)[0][:20])
    return record


def read_candidates(path: str, source_name: str, cfg: ReadConfig) -> Iterator[Record]:
    fmt = cfg.input_format or detect_format(path)
    for row_number, row in enumerate(read_rows(path, fmt)):
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
