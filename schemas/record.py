"""The one record that flows through every stage, and its Parquet schemas.

A stage takes a Record and returns it, either updated (still `active`) or marked
`dropped` with the stage and reason from schemas/reasons.py. The writer marks the
survivors `kept` with their shard and key. The ledger stores exactly these fields, so
"why is this pair in or out" is answered by the record itself.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from typing import Optional

import pyarrow as pa

from openwit.schemas.reasons import reason

ACTIVE, KEPT, DROPPED = "active", "kept", "dropped"


@dataclass(frozen=True)
class Record:
    uid: str
    url: str
    caption: str
    source: str  # input file and row (or WARC record): where the candidate came from
    page_url: Optional[str] = None
    status: str = ACTIVE
    # set by the text and match stages
    language: Optional[str] = None
    language_score: Optional[float] = None
    entry_ids: tuple[int, ...] = ()
    # set when dropped
    stage: Optional[str] = None
    reason: Optional[str] = None
    detail: Optional[str] = None
    duplicate_of: Optional[str] = None
    # set by download and image
    http_status: Optional[int] = None
    sha256: Optional[str] = None  # of the original downloaded bytes
    stored_sha256: Optional[str] = None  # of the image as stored in the shard
    original_width: Optional[int] = None
    original_height: Optional[int] = None
    width: Optional[int] = None
    height: Optional[int] = None
    image_format: Optional[str] = None  # extension of the stored image: jpg, png, webp
    image_path: Optional[str] = None  # staged processed image (not in the ledger)
    phash: Optional[str] = None
    # mean CIELAB colours of 4x4 cells, hex (stages/image.py colour_signature): near-dup dedup
    # checks it on pHash-close pairs, since pHash is colour-blind. None in rows written before.
    colour_sig: Optional[str] = None
    # set by the score stage (--score-model): image-text cosine of that checkpoint
    clip_score: Optional[float] = None
    # set by the writer
    shard: Optional[str] = None
    key: Optional[str] = None

    def __reduce__(self):
        # Shuffles pickle records (Beam's fallback coder): positional values only, without
        # the 25 field names a dataclass pickle repeats per record (~40% smaller).
        return (_record_from_values, tuple(getattr(self, name) for name in RECORD_FIELDS))

    def update(self, **changes) -> "Record":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        row = dataclasses.asdict(self)
        row["entry_ids"] = list(self.entry_ids)
        return row


RECORD_FIELDS = tuple(field.name for field in dataclasses.fields(Record))


def _record_from_values(*values) -> Record:
    return Record(*values)


def drop(record: Record, reason_name: str, detail: str = "", duplicate_of: Optional[str] = None) -> Record:
    """Mark a record dropped; the stage comes from the reason registry, never from the caller."""
    why = reason(reason_name)
    return record.update(
        status=DROPPED, stage=why.stage, reason=why.name, detail=detail or None, duplicate_of=duplicate_of
    )


def error_detail(err: Exception) -> str:
    # Object addresses ("<BytesIO at 0x7f...>") would make the ledger differ between runs.
    return re.sub(r" at 0x[0-9a-f]+", "", f"{type(err).__name__}: {err}")[:200]


def drop_internal_error(record: Record, stage: str, err: Exception) -> Record:
    """A bug in `stage` met this record: record it as a drop instead of failing the run."""
    return record.update(status=DROPPED, stage=stage, reason="internal_error", detail=error_detail(err))


def guarded(fn, stage: str):
    """fn(record, ...) whose unexpected exceptions become internal_error drops: one hostile
    record must not fail a run of millions, and nothing may leave the ledger."""

    def apply(record, *args):
        try:
            return fn(record, *args)
        except Exception as err:  # noqa: BLE001 - recorded with its type and message
            return drop_internal_error(record, stage, err)

    return apply


def make_uid(source_name: str, row_number: int) -> str:
    """A stable id unique per input row: identical rows in one file still get distinct uids."""
    digest = hashlib.sha256(f"{source_name}\x00{row_number}".encode("utf-8")).hexdigest()
    return digest[:20]


# Fields kept out of the ledger: local paths that mean nothing after the run.
_NOT_IN_LEDGER = {"image_path"}

_ARROW_TYPES = {
    "entry_ids": pa.list_(pa.int32()),
    "language_score": pa.float32(),
    "clip_score": pa.float32(),
    "http_status": pa.int32(),
    "original_width": pa.int32(),
    "original_height": pa.int32(),
    "width": pa.int32(),
    "height": pa.int32(),
}


def _arrow_fields(names):
    return [pa.field(n, _ARROW_TYPES.get(n, pa.string())) for n in names]


# recorded_at: when a later revision (a takedown) was appended; null for the run's own rows,
# which must stay byte-identical across runs and runners.
LEDGER_FIELDS = ["revision"] + [n for n in RECORD_FIELDS if n not in _NOT_IN_LEDGER] + ["recorded_at"]
LEDGER_SCHEMA_VERSION = "openwit-ledger/4"  # 3: clip_score; 4: colour_sig (older parts read it as null)

# revision: 0 for the run that created the output; later runs (retry, takedown) append
# rows with a higher revision, and the row with the highest revision per uid is current.
LEDGER_SCHEMA = pa.schema([pa.field("revision", pa.int32())] + _arrow_fields(LEDGER_FIELDS[1:]))

# One row per sample in a shard's Parquet index (like img2dataset's per-shard parquet).
SHARD_INDEX_FIELDS = [
    "key", "uid", "url", "caption", "page_url", "source", "entry_ids", "sha256", "stored_sha256", "width",
    "height", "original_width", "original_height", "language", "phash",
]
SHARD_INDEX_SCHEMA = pa.schema(_arrow_fields(SHARD_INDEX_FIELDS))


def ledger_row(record: Record, revision: int = 0, recorded_at: Optional[str] = None) -> dict:
    row = record.to_dict()
    for name in _NOT_IN_LEDGER:
        row.pop(name)
    row["revision"] = revision
    row["recorded_at"] = recorded_at
    return {name: row[name] for name in LEDGER_FIELDS}


def sample_metadata(record: Record) -> dict:
    """What goes into KEY.json next to the image, and into the shard's Parquet index."""
    row = record.to_dict()
    return {name: row[name] for name in SHARD_INDEX_FIELDS}
