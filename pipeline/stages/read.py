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

from openwit.pipeline.common.errors import UserError
from openwit.pipeline.common.flags import opt
from openwit.pipeline.common.urls import SCHEMES, without_credentials
from openwit.schemas.record import Record, drop, make_uid

FORMATS = ("parquet", "jsonl", "csv", "tsv", "warc", "wat")
COMPRESSED = (".gz", ".bz2", ".zst", ".lzma", ".xz", ".deflate")  # what FileSystems.open decompresses
# Marker keys a row may carry besides its columns (row readers and stages/extract.py set them):
MALFORMED = "__malformed__"  # why the row is unusable; it becomes a malformed_row drop
SOURCE = "__source__"  # where inside the file it came from, e.g. the WARC record id
ROW_MARKERS = (MALFORMED, SOURCE)
MAX_LINE_BYTES = 16 << 20  # a longer input line (or CSV field) is a malformed row, not kept in memory
READ_CHUNK = 1 << 20
csv.field_size_limit(MAX_LINE_BYTES)  # the 128 KiB default would refuse one long caption


@dataclass(frozen=True)
class ReadConfig:
    input_format: Optional[str] = opt(None, "default: from the extension", choices=FORMATS)
    url_col: str = opt("url")
    caption_col: str = opt("caption")
    page_url_col: str = opt("page_url")


def detect_format(path: str) -> str:
    name = path.lower()
    for ext in COMPRESSED:
        if name.endswith(ext):
            name = name[:-len(ext)]
            break
    for fmt, exts in (("parquet", (".parquet",)), ("jsonl", (".jsonl", ".json")), ("csv", (".csv",)),
                      ("tsv", (".tsv", ".txt")), ("wat", (".wat", ".warc.wat")), ("warc", (".warc", ".arc"))):
        if name.endswith(exts):
            return fmt
    raise ValueError(f"cannot tell the format of {path!r}; pass --input-format ({', '.join(FORMATS)})")


def read_rows(path: str, fmt: str, cfg: ReadConfig) -> Iterator[dict]:
    """Yield the rows of one input file as dicts, in file order. A row that cannot be read
    (bad JSON, a CSV quoting error, invalid UTF-8, a line over MAX_LINE_BYTES, each row of a
    Parquet row group that cannot be decoded) is yielded as a MALFORMED row naming its line, and the file
    reading goes on; text formats are streamed line by line."""
    if fmt in ("warc", "wat"):
        yield from _archive_rows(path, fmt, cfg)
        return
    if fmt not in FORMATS:
        raise ValueError(f"unknown input format {fmt!r}; expected one of {FORMATS}")
    name = os.path.basename(path)
    with FileSystems.open(path) as raw:  # decompresses .gz by extension
        if fmt == "parquet":
            try:
                data = raw.read()
            except Exception as err:  # noqa: BLE001 - a damaged .parquet.gz (or .bz2 ...): nothing is readable
                yield {MALFORMED: f"{name}: the compressed file is damaged ({type(err).__name__}: {err})"[:300]}
                return
            yield from _parquet_rows(data, name, path, cfg)
        elif fmt == "jsonl":
            for number, line, problem in _lines(raw):
                if problem or line.strip():
                    yield _parse_json_line(line, problem, name, number)
        else:
            yield from _delimited_rows(_lines(raw), name, path, fmt, cfg)


def _parquet_rows(data: bytes, name: str, path: str, cfg: ReadConfig) -> Iterator[dict]:
    """Rows of each row group; a row group that cannot be decoded is one MALFORMED row per
    row its metadata counts (page checksums are verified where the writer stored them)."""
    try:
        parquet = pq.ParquetFile(io.BytesIO(data), page_checksum_verification=True)
    except Exception as err:  # noqa: BLE001 - no footer, not Parquet: nothing of it is readable
        yield {MALFORMED: f"{name}: not a readable Parquet file: {type(err).__name__}: {err}"[:300]}
        return
    _require_url_column(path, parquet.schema_arrow.names, cfg)
    for group in range(parquet.num_row_groups):
        try:
            rows = parquet.read_row_group(group).to_pylist()
        except Exception as err:  # noqa: BLE001 - one damaged row group costs only its rows
            count = parquet.metadata.row_group(group).num_rows
            why = f"{name} row group {group} ({count} rows) cannot be read: {type(err).__name__}: {err}"[:250]
            # one dead letter per row, so that every later row keeps its exact number (uid, source)
            for row in range(max(count, 1)):
                yield {MALFORMED: f"{why} (its row {row})"}
            continue
        yield from rows


def _lines(raw) -> Iterator[tuple[int, str, Optional[str]]]:
    """(1-based line number, text with its "\\n", problem or None) of each line, read in
    pieces. Only "\\n" ends a line: str.splitlines() would also split on U+2028, U+0085, \\x0c
    ..., which json.dumps(ensure_ascii=False) leaves raw inside strings. A line over
    MAX_LINE_BYTES is not kept (its problem says so); nor is one that is not UTF-8. Compressed
    data that cannot be decompressed ends the file with one line whose problem says so."""
    pending, size, number = [], 0, 0
    while True:
        try:
            chunk = raw.read(READ_CHUNK)
        except Exception as err:  # noqa: BLE001 - damaged .gz/.bz2/.zst/.xz (each raises its own): nothing after it is readable
            yield number + 1, "", f"the compressed file is damaged from here on ({type(err).__name__}: {err})"
            return
        pieces = chunk.split(b"\n") if chunk else [None]
        for i, piece in enumerate(pieces):
            ends_line = i < len(pieces) - 1 or piece is None
            if piece:
                size += len(piece)
                if size <= MAX_LINE_BYTES:
                    pending.append(piece)
            if not ends_line or (piece is None and not size):
                continue
            number += 1
            yield (number, *_decode_line(b"".join(pending), size, number == 1, piece is not None))
            pending, size = [], 0
        if not chunk:
            return


def _decode_line(data: bytes, size: int, first: bool, newline: bool) -> tuple[str, Optional[str]]:
    end = "\n" if newline else ""
    if size > MAX_LINE_BYTES:
        return end, f"{size} bytes, over the limit of {MAX_LINE_BYTES}"
    try:  # -sig: a BOM must not rename the first column
        return data.decode("utf-8-sig" if first else "utf-8") + end, None
    except UnicodeDecodeError as err:
        return end, f"not UTF-8 (byte {err.start + 1} of the line)"


def _archive_rows(path: str, fmt: str, cfg: ReadConfig) -> Iterator[dict]:
    """WARC/WAT candidates as rows under the configured column names. warcio reads the
    per-record gzip members itself, so the file is opened without decompression."""
    from apache_beam.io.filesystem import CompressionTypes

    from openwit.pipeline.stages import extract

    rows = extract.warc_rows if fmt == "warc" else extract.wat_rows
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        for row in rows(raw, os.path.basename(path)):
            renamed = {cfg.url_col: row.get("url"), cfg.caption_col: row.get("caption"),
                       cfg.page_url_col: row.get("page_url")}
            yield {**renamed, **{k: v for k, v in row.items() if k in ROW_MARKERS}}


MAX_RECORD_LINES = 1000  # a CSV record (quoted newlines) longer than this is malformed
REREAD_FACTOR = 8  # lines read again after quoting errors: at most this many per line read once


class _LineFeed:
    """The lines of a CSV/TSV file for csv.reader, remembering those of the record being
    read so that after a quoting error all but its first line can be read again.

    A record may span at most MAX_RECORD_LINES lines and MAX_LINE_BYTES characters (past
    that, csv.Error), so one failed record puts back a bounded number of lines. Re-reading is
    bounded in total too: each character read for the first time earns REREAD_FACTOR of
    credit, and while re-reading has spent more than that, a record must fit on one line.
    Without both bounds a file where every line opens a quote that runs to the end of the
    file costs time and memory quadratic in its size."""

    def __init__(self, lines):
        self.lines, self.again = lines, []
        self.record: list[tuple[int, str, Optional[str]]] = []
        self.record_size = 0
        self.credit = 0  # the lines of a failed record earned credit when first read

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self.record and self._full():
            raise csv.Error(f"a record over {self._limit()} lines or {MAX_LINE_BYTES} characters")
        if self.again:
            line = self.again.pop()
            self.credit -= len(line[1]) + 1
        else:
            line = next(self.lines)
            self.credit += REREAD_FACTOR * (len(line[1]) + 1)
        self.record.append(line)
        self.record_size += len(line[1])
        return line[1]

    def _limit(self) -> int:
        return MAX_RECORD_LINES if self.credit > 0 else 1

    def _full(self) -> bool:
        return len(self.record) >= self._limit() or self.record_size >= MAX_LINE_BYTES

    def next_record(self) -> None:
        self.record, self.record_size = [], 0

    def read_again_after_first(self) -> None:
        self.again.extend(reversed(self.record[1:]))


def _delimited_rows(lines, name: str, path: str, fmt: str, cfg: ReadConfig) -> Iterator[dict]:
    """Rows of a CSV/TSV. A record that fails (a quoting error, a field over the size limit,
    a line not UTF-8 or too long) is one MALFORMED row for its first line, and reading
    resumes at the next line: an unclosed quote, which would swallow the rest of the file
    into one field, costs only the line it is on."""
    # TSV has no quoting convention: a caption starting with '"' must not swallow rows.
    options = {"delimiter": ",", "strict": True} if fmt == "csv" else {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    feed = _LineFeed(lines)
    reader = csv.reader(feed, **options)
    try:
        header = next(reader, [])
    except csv.Error as err:
        raise UserError(f"{path}: malformed {fmt} header ({err}); fix its quoting") from None
    if feed.record and feed.record[0][2]:  # e.g. not UTF-8: say so, not "no url column (columns: [])"
        raise UserError(f"{path}: the header line cannot be read ({feed.record[0][2]}); save the file as UTF-8")
    _require_url_column(path, header, cfg)
    while True:
        feed.next_record()
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            first = feed.record[0][0]
            yield {MALFORMED: f"{name} line {first}: malformed {fmt}: {err}"[:300]}
            feed.read_again_after_first()
            continue
        problems = [(number, problem) for number, _, problem in feed.record if problem]
        if problems:
            yield {MALFORMED: f"{name} line {problems[0][0]}: {problems[0][1]}"}
        elif fields:  # a blank line is no row
            yield dict(zip(header, fields))


def _require_url_column(path: str, columns, cfg: ReadConfig) -> None:
    if cfg.url_col not in columns:
        raise UserError(f"{path}: no url column {cfg.url_col!r} (columns: {list(columns)[:20]}); pass --url-col")


def _parse_json_line(line: str, problem: Optional[str], name: str, number: int) -> dict:
    """One JSONL line as a row; anything wrong with it (kept as a row so that it still gets
    a ledger record) is a MALFORMED row: bad JSON, nesting deep enough for a RecursionError,
    an integer over Python's digit limit (ValueError), not an object."""
    if problem:
        return {MALFORMED: f"{name} line {number}: {problem}"}
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        return {MALFORMED: f"{name} line {number}: {err.msg}"}
    except (RecursionError, ValueError, MemoryError) as err:
        return {MALFORMED: f"{name} line {number}: {type(err).__name__}: {str(err)[:200]}"}
    return row if isinstance(row, dict) else {MALFORMED: f"{name} line {number}: not a JSON object"}


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
    """One input row to a candidate; rows without a usable url or caption are dropped.
    A user name or password in a url is never published: the record holds the url without
    them (and a page url too, which is never fetched), and such a url is never requested."""
    given_url = _text(row.get(cfg.url_col))
    url = without_credentials(given_url)
    caption = _text(row.get(cfg.caption_col))
    record = Record(
        uid=make_uid(source_name, row_number),
        url=url,
        caption=caption,
        page_url=without_credentials(_text(row.get(cfg.page_url_col))) or None,
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
    if url != given_url:
        return drop(record, "credentials_in_url", "the url held a user name or password; removed from this row")
    return record


def read_candidates(path: str, source_name: str, cfg: ReadConfig) -> Iterator[Record]:
    fmt = cfg.input_format or detect_format(path)
    for row_number, row in enumerate(read_rows(path, fmt, cfg)):
        try:
            yield make_candidate(row, source_name, row_number, cfg)
        except Exception as err:  # noqa: BLE001 - a row no rule foresaw is still one ledger row
            yield make_candidate({MALFORMED: f"{type(err).__name__}: {err}"[:300]}, source_name, row_number, cfg)


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
