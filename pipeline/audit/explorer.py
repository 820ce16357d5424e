"""`openwit audit explorer OUT -o DIR`: a static folder to browse every candidate of an
output, kept or dropped, and why (docs/explorer.md).

DIR opens from disk (file://): no server, no network asset. Chromium blocks fetch() of
file:// URLs, so every data file is a script that hands its content to a global
(`openwit.take(name, value)`), loaded with a <script> tag when a view needs it:

    DIR/.openwit-explorer                       written first: marks DIR as an explorer that a
                                                later run may rewrite (nothing else is touched)
    DIR/index.html, explorer.js, explorer.css   the page (copied from explorer_assets/)
    DIR/report.html                             `audit report`, linking into the explorer
    DIR/data/meta.js        counts, reasons (with the registry's text), languages, shards,
                            size bins, the manifest's timeline, the OUT it was made from
    DIR/data/codes.js       per candidate 5 bytes (fate, language, shard, size bin, image)
                            as base64: every filter runs on these without loading a row
    DIR/data/rows-NNNNN.js  ROWS_PER_CHUNK ledger rows each (current state), in explorer order
    DIR/data/captions-NNNNN.js  CAPTIONS_PER_CHUNK captions each: what caption search scans
    DIR/data/entries.js     per-entry balancing counts (stats/entries.parquet), matched entries
    DIR/data/postings-NNNNN.js  per entry id (ENTRIES_PER_CHUNK ids a file): its candidates
    DIR/data/clusters-NNNNN.js  CLUSTERS_PER_CHUNK duplicate clusters each (largest first):
                            survivor, members, their distances
    DIR/data/clusterindex-NNNNN.js  survivor uid -> cluster number, by uid (meta holds
                            each file's first uid), so a link to one cluster loads two files
    DIR/img/NNNNN/ROW.jpg   thumbnails: kept samples from the shards, dropped candidates from
                            their staged image where one exists

A candidate's row number is its place in explorer order: kept samples first (by shard and
key), then drops by stage (pipeline order), reason and uid. Each reason's rows are
contiguous, so a reason filter loads only its own chunks.

The writer streams (write_explorer): the ledger is read in batches twice and rows reach
their chunks through bucket files, so memory grows by tens of bytes per candidate, not
by the ledger's size (docs/explorer.md has the measurements).
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import os
import re
import shutil
import tempfile
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from openwit.pipeline.common.errors import UserError
from openwit.pipeline.output import files, layout, ledger, shards
from openwit.pipeline.output.manifest import read_manifest
from openwit.pipeline.stages.image import OUTPUT_FORMATS
from openwit.schemas.reasons import REASONS, STAGES
from openwit.schemas.record import KEPT

ROWS_PER_CHUNK = 1000
CAPTIONS_PER_CHUNK = 10000
ENTRIES_PER_CHUNK = 1000
CLUSTERS_PER_CHUNK = 200  # ten pages of the clusters view
CLUSTER_INDEX_PER_CHUNK = 5000
BATCH_ROWS = 8192  # ledger rows read at a time
THUMBNAIL_SIDE = 128
ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "explorer_assets")
PAGE_FILES = ("index.html", "explorer.js", "explorer.css")
DATA, IMAGES = "data", "img"
REPORT = "report.html"
# Written first into DIR, before anything else: only a folder holding it is an explorer that
# a later run may rewrite (a folder that merely has an explorer.js may be someone's web site).
MARKER = ".openwit-explorer"
MARKER_VERSION = 1
MARKER_TEXT = f"openwit explorer {MARKER_VERSION}\n"
MARKER_LINE = re.compile(r"openwit explorer \d+\n?")
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# The ledger columns a candidate's page shows, in this order (rows-NNNNN.js holds these).
COLUMNS = ["uid", "status", "stage", "reason", "detail", "duplicate_of", "caption", "url", "page_url", "source",
           "language", "language_score", "entry_ids", "http_status", "sha256", "phash", "original_width",
           "original_height", "width", "height", "image_format", "clip_score", "shard", "key", "revision",
           "recorded_at"]
OTHER_LANGUAGE = 255  # codes.lang for a language beyond the 255 most frequent (or none)
DUPLICATE_REASONS = ("near_duplicate", "duplicate_image", "duplicate_url")
NO_DISTANCES = {}  # shared by every duplicate whose detail names no distance; never changed
BALANCED_OUT = ("balanced_out_pre", "balanced_out_final")


# ------------------------------------------------------------------ paths in DIR


def data_path(target: str, name: str) -> str:
    return os.path.join(target, DATA, name + ".js")


def chunk_name(kind: str, number: int) -> str:
    return f"{kind}-{number:05d}"


def thumbnail_path(target: str, row: int) -> str:
    """img/NNNNN/ROW.jpg: a folder per rows chunk keeps folders small at 1M candidates."""
    return os.path.join(target, IMAGES, f"{row // ROWS_PER_CHUNK:05d}", f"{row}.jpg")


def write_data(target: str, name: str, value) -> None:
    """data/NAME.js: a script that hands `value` to the page (JSON is valid JavaScript)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    with open(data_path(target, name), "w", encoding="utf-8") as f:
        f.write(f"openwit.take({json.dumps(name)},{text});\n")


# ------------------------------------------------------------------ the rows


def stage_rank(stage) -> int:
    return STAGES.index(stage) if stage in STAGES else len(STAGES)


def size_bin(row: dict) -> int:
    """0 without a size; else 1 + floor(log2(shorter side of the original))."""
    width, height = row.get("original_width"), row.get("original_height")
    if not width or not height:
        return 0
    return 1 + int(math.log2(min(width, height)))


def size_label(code: int) -> str:
    if code == 0:
        return "no size"
    low = 2 ** (code - 1)
    return f"{low}-{2 * low - 1} px"


def compact(row: dict) -> list:
    values = []
    for name in COLUMNS:
        value = row.get(name)
        if isinstance(value, float):
            value = round(value, 4)
        values.append(value)
    return values


def reason_list(counts: Counter) -> list[dict]:
    """The drop reasons present (counts: drop fate -> candidates), in explorer order, with
    their registry text and counts."""
    found = []
    for (stage, name), n in sorted(counts.items(), key=lambda kv: (stage_rank(kv[0][0]), kv[0][1])):
        known = REASONS.get(name)
        found.append({"name": name, "stage": stage, "count": n,
                      "transient": known.transient if known else None,
                      "description": known.description if known else "not in this openwit's reason registry"})
    return found


def encode_codes(arrays: dict) -> dict:
    """Per-row filter codes as base64 byte arrays (shard: uint16 little-endian)."""
    types = {"fate": np.uint8, "lang": np.uint8, "shard": "<u2", "size": np.uint8, "image": np.uint8}
    return {name: base64.b64encode(np.asarray(arrays[name]).astype(types[name]).tobytes()).decode()
            for name in types}


# ------------------------------------------------------------------ reading the ledger in batches


# Pass 1 reads these (small) columns; detail only for duplicate drops' distances.
KEY_COLUMNS = ["uid", "revision", "status", "stage", "reason", "shard", "key", "language", "duplicate_of", "detail"]


def ledger_paths(out_dir: str) -> list[str]:
    paths = files.matching(layout.ledger_pattern(out_dir))
    if not paths:
        raise FileNotFoundError(f"no ledger under {layout.ledger_dir(out_dir)}")
    return paths


@contextlib.contextmanager
def returning_memory():
    """Arrow's allocations through the system allocator while the ledger is read. pyarrow's
    default pool (mimalloc in its wheels) keeps freed pages: read batch after batch, a
    ledger left the process ~0.5 KB per candidate larger (20K vs 80K rows: 107 vs 153 MB
    after reading alone; 77 vs 81 MB with this pool)."""
    before = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(before)


def batches(paths: list[str], columns: list[str]):
    """(index of its first row in the whole ledger, RecordBatch) over every part in order,
    BATCH_ROWS at a time: the ledger is never whole in memory. A column a part lacks (one
    written before it was added) is simply absent from that part's batches."""
    at = 0
    for path in paths:
        # a part is usually one row group: read its column chunks piece by piece, on this thread
        source = pq.ParquetFile(pa.BufferReader(files.read_file(path)) if files.is_remote(path) else path,
                                buffer_size=1 << 20, pre_buffer=False)
        present = [c for c in columns if c in source.schema_arrow.names]
        for batch in source.iter_batches(batch_size=BATCH_ROWS, columns=present, use_threads=False):
            yield at, batch
            at += batch.num_rows


class Codebook:
    """Small integer ids for the distinct values of a column, given in order of first sight."""

    def __init__(self):
        self.ids = {}

    def encode(self, column: pa.Array) -> np.ndarray:
        """A batch's values as ids (vectorised: thousands of rows, few distinct values)."""
        distinct = pc.unique(column)
        lookup = np.array([self.ids.setdefault(v, len(self.ids)) for v in distinct.to_pylist()], dtype=np.int64)
        return lookup[pc.index_in(column, value_set=distinct).to_numpy(zero_copy_only=False).astype(np.int64)]

    def values(self) -> list:
        return sorted(self.ids, key=self.ids.get)


def column(batch: pa.RecordBatch, name: str) -> pa.Array:
    index = batch.schema.get_field_index(name)
    return batch.column(index) if index >= 0 else pa.nulls(batch.num_rows, pa.string())


class Keys:
    """Pass 1: per ledger row only what orders and filters it (about 50 bytes: the uid,
    the kept sample's key, small ids), plus each duplicate drop's survivor and distances."""

    def __init__(self):
        self.fates, self.languages, self.shards = Codebook(), Codebook(), Codebook()
        self.tables, self.duplicates = [], []

    def add(self, at: int, batch: pa.RecordBatch) -> None:
        status = column(batch, "status")
        kept = pc.fill_null(pc.equal(status, KEPT), False)
        stage = pc.fill_null(column(batch, "stage"), "")
        reason = pc.fill_null(column(batch, "reason"), "unknown")
        fate_text = pc.if_else(kept, "", pc.binary_join_element_wise(stage, reason, "\x00"))
        revision = column(batch, "revision")
        self.tables.append(pa.table({
            "at": pa.array(np.arange(at, at + batch.num_rows, dtype=np.int32)),
            "uid": column(batch, "uid"),
            "revision": pc.fill_null(revision.cast(pa.int32()), 0),
            "fate": pa.array(self.fates.encode(fate_text).astype(np.uint16)),
            "lang": pa.array(self.languages.encode(column(batch, "language")).astype(np.uint16)),
            "shard": pa.array(self.shards.encode(column(batch, "shard")).astype(np.int32)),
            "key": pc.if_else(kept, column(batch, "key"), pa.scalar(None, pa.string())),
        }))
        duplicate = pc.and_(pc.invert(kept), pc.is_in(reason, value_set=pa.array(DUPLICATE_REASONS)))
        duplicate = pc.and_(pc.fill_null(duplicate, False), pc.is_valid(column(batch, "duplicate_of")))
        found = np.flatnonzero(duplicate.to_numpy(zero_copy_only=False))
        if len(found):
            taken = pa.table({"of": column(batch, "duplicate_of"), "reason": reason,
                              "detail": column(batch, "detail")}).take(pa.array(found))
            for i, of, why, detail in zip(found.tolist(), *(taken.column(c).to_pylist() for c in ("of", "reason", "detail"))):
                # one shared str per reason, one shared empty dict: a million duplicates stay small
                distances = parse_distances(detail) or NO_DISTANCES
                self.duplicates.append((at + i, of, DUPLICATE_REASONS[DUPLICATE_REASONS.index(why)], distances))

    def fate_of(self, text: str):
        """KEPT, or (stage, reason) of a drop: one reason name (internal_error) occurs at
        several stages, and each is its own fate."""
        if text == "":
            return KEPT
        stage, reason = text.split("\x00", 1)
        return (stage or None, reason)


def current_rows(table: pa.Table) -> pa.Table:
    """The latest revision per uid (the ledger's current state), vectorised."""
    revisions = table.column("revision")
    if table.num_rows == 0 or pc.min(revisions).as_py() == pc.max(revisions).as_py():
        return table  # one revision: every uid once
    ordered = table.sort_by([("uid", "ascending"), ("revision", "descending")])
    uids = ordered.column("uid").combine_chunks()
    first = np.ones(ordered.num_rows, dtype=bool)
    first[1:] = pc.not_equal(uids.slice(1), uids.slice(0, len(uids) - 1)).to_numpy(zero_copy_only=False)
    return ordered.filter(pa.array(first))


class Plan:
    """The explorer order of the current rows, and what follows from the keys alone."""

    def __init__(self, keys: Keys, total_rows: int):
        if not keys.tables:  # a ledger without rows: one empty batch gives the columns
            keys.add(0, pa.RecordBatch.from_pylist([], schema=pa.schema([(c, pa.string()) for c in KEY_COLUMNS])))
        state = current_rows(pa.concat_tables(keys.tables))
        keys.tables = []
        fate_texts = keys.fates.values()
        fates = [keys.fate_of(t) for t in fate_texts]
        state_fates = state.column("fate").to_numpy()
        counts = np.bincount(state_fates, minlength=len(fates))
        drops = Counter({f: int(counts[i]) for i, f in enumerate(fates) if f != KEPT and counts[i]})
        self.reasons = reason_list(drops)
        rank = {(r["stage"], r["name"]): k + 1 for k, r in enumerate(self.reasons)}
        fate_code = np.array([0 if f == KEPT else rank.get(f, 0) for f in fates] or [0], dtype=np.int32)
        shard_names = keys.shards.values()
        self.shard_names = sorted(s for s in shard_names if s)
        shard_code = np.array([self.shard_names.index(s) + 1 if s else 0 for s in shard_names] or [0], dtype=np.int32)
        codes_fate = fate_code[state_fates]
        codes_shard = shard_code[state.column("shard").to_numpy()]
        kept = codes_fate == 0
        # Kept first by (shard, key), then drops by stage (pipeline order), reason, uid.
        state = state.append_column("order_fate", pa.array(codes_fate)).append_column(
            "order_shard", pa.array(np.where(kept, codes_shard, 0)))
        order = pc.sort_indices(state, sort_keys=[("order_fate", "ascending"), ("order_shard", "ascending"),
                                                  ("key", "ascending"), ("uid", "ascending")])
        state = state.take(order)
        self.rows = state.num_rows
        self.uids = state.column("uid").combine_chunks()
        self.keys = state.column("key").combine_chunks()
        self.fate = state.column("order_fate").to_numpy()
        self.shard = codes_shard[order.to_numpy()]
        self.kept = int((self.fate == 0).sum())
        self.position = np.full(total_rows, -1, dtype=np.int32)  # ledger row -> explorer row
        self.position[state.column("at").to_numpy()] = np.arange(self.rows)
        language_ids = state.column("lang").to_numpy()
        language_names = keys.languages.values()
        per_language = np.bincount(language_ids, minlength=len(language_names))
        common = sorted((i for i, name in enumerate(language_names) if name and per_language[i]),
                        key=lambda i: (-per_language[i], language_names[i]))[:OTHER_LANGUAGE]
        self.languages = [language_names[i] for i in common]
        lang_code = np.full(max(len(language_names), 1), OTHER_LANGUAGE, dtype=np.int32)
        lang_code[common] = np.arange(len(common))
        self.lang = lang_code[language_ids]
        self.dropped_per_stage = Counter()
        for r in self.reasons:
            self.dropped_per_stage[r["stage"]] += r["count"]
        self.language_funnel = language_funnel(self.fate, self.lang, self.reasons, self.languages)


def language_funnel(fate: np.ndarray, lang: np.ndarray, reasons: list[dict], languages: list[str]) -> list[list]:
    """[language, candidates, dropped before balancing, balanced out, dropped after, kept] per
    language code of the rows (summary.FUNNEL_COLUMNS; "other" for the rest and none)."""
    from openwit.pipeline.audit.summary import FUNNEL_COLUMNS, drop_column

    drops = [FUNNEL_COLUMNS.index(drop_column(r["stage"], r["name"])) for r in reasons]
    column_of = np.array([FUNNEL_COLUMNS.index("kept"), *drops], dtype=np.int64)  # fate 0: kept
    counts = np.bincount(lang.astype(np.int64) * 5 + column_of[fate], minlength=5 * (OTHER_LANGUAGE + 1))
    counts = counts.reshape(-1, 5)
    rows = []
    for code, name in [*enumerate(languages), (OTHER_LANGUAGE, "other")]:
        row = counts[code].tolist()
        if sum(row):
            rows.append([name, sum(row), *row[1:]])
    return rows


# ------------------------------------------------------------------ duplicates


DISTANCE = re.compile(r"([A-Za-z][\w-]*)\s+distance\s*[=:]?\s*(-?\d+(?:\.\d+)?)")


def parse_distances(detail) -> dict:
    """Every "<name> distance <number>" of a dedup detail: the pHash's ("phash P at distance D
    from S of UID": the word before is "at") under "phash", any other (a colour distance a
    later detail may add) under its own word. Whatever else the detail says is shown as is."""
    found = {}
    for word, number in DISTANCE.findall(detail or ""):
        name = "phash" if word.lower() in ("at", "phash") else word.lower()
        found.setdefault(name, float(number) if "." in number else int(number))
    return found


def cluster_list(plan: Plan, duplicates: list) -> list[list]:
    """[survivor row, survivor uid, [[member row, reason, distances], ...]] for every
    survivor of a current duplicate drop, largest cluster first (then by survivor uid);
    members by pHash distance, then uid."""
    if not duplicates:
        return []
    ats = np.array([d[0] for d in duplicates], dtype=np.int64)
    members = plan.position[ats]
    survivors = pc.index_in(pa.array([d[1] for d in duplicates], pa.string()), value_set=plan.uids)
    survivors = survivors.to_numpy(zero_copy_only=False)
    groups = {}
    for k in np.flatnonzero((members >= 0) & ~np.isnan(survivors)):
        reason, distances = duplicates[k][2], duplicates[k][3]
        groups.setdefault(int(survivors[k]), []).append([int(members[k]), reason, distances])
    uid = plan.uids
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), uid[kv[0]].as_py()))
    return [[survivor, uid[survivor].as_py(),
             sorted(group, key=lambda m: (m[2].get("phash", 0), uid[m[0]].as_py()))]
            for survivor, group in ordered]


def with_faces(found: list[list], faces: dict) -> list[list]:
    """Each cluster as [survivor row, survivor uid, members, survivor face], each member as
    [row, reason, distances, face]; a face is [uid, status, reason, caption]."""
    return [[survivor, uid, [member + [faces[member[0]]] for member in members], faces[survivor]]
            for survivor, uid, members in found]


def write_clusters(target: str, found: list[list]) -> list[str]:
    """clusters-NNNNN.js (CLUSTERS_PER_CHUNK clusters each, in cluster order) and
    clusterindex-NNNNN.js (survivor uid -> cluster number, CLUSTER_INDEX_PER_CHUNK uids each,
    by uid). -> the first uid of every index chunk: the page finds a cluster by its uid with
    meta alone, then one index chunk and one clusters chunk."""
    for start in range(0, len(found), CLUSTERS_PER_CHUNK):
        write_data(target, chunk_name("clusters", start // CLUSTERS_PER_CHUNK), found[start:start + CLUSTERS_PER_CHUNK])
    by_uid = sorted((cluster[1], number) for number, cluster in enumerate(found))
    firsts = []
    for start in range(0, len(by_uid), CLUSTER_INDEX_PER_CHUNK):
        part = by_uid[start:start + CLUSTER_INDEX_PER_CHUNK]
        firsts.append(part[0][0])
        write_data(target, chunk_name("clusterindex", start // CLUSTER_INDEX_PER_CHUNK), dict(part))
    return firsts


# ------------------------------------------------------------------ entries


def entry_table(out_dir: str) -> list[list]:
    """[entry id, entry, matches in the pool, kept before download, kept in the shards] for
    every entry with a match (stats/entries.parquet), or [] when the run wrote no stats."""
    path = layout.entry_stats_path(out_dir)
    if not files.exists(path):
        return []
    table = files.read_parquet(path).to_pylist()
    return [[e["entry_id"], e["entry"], e["matches_in_pool"], e["kept_pre_balance"], e["kept_final"]]
            for e in table if e["matches_in_pool"] > 0]


def write_postings(target: str, entries: np.ndarray, rows: np.ndarray) -> None:
    """postings-NNNNN.js: per entry id (ENTRIES_PER_CHUNK ids a file) its rows, ascending."""
    order = np.lexsort((rows, entries))
    entries, rows = entries[order], rows[order]
    chunks = entries // ENTRIES_PER_CHUNK
    for chunk in np.unique(chunks):
        inside = np.flatnonzero(chunks == chunk)
        lists = {}
        for entry in np.unique(entries[inside]):
            lo, hi = np.searchsorted(entries, entry, "left"), np.searchsorted(entries, entry, "right")
            lists[str(int(entry))] = rows[lo:hi].tolist()
        write_data(target, chunk_name("postings", int(chunk)), lists)


# ------------------------------------------------------------------ images


def thumbnail(data: bytes) -> bytes:
    """A small JPEG of an image (at most THUMBNAIL_SIDE a side)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=80)
        return out.getvalue()


def save_thumbnail(target: str, row: int, data: bytes) -> bool:
    try:
        small = thumbnail(data)
    except Exception:  # a picture PIL cannot read again: the page shows "no image"
        return False
    path = thumbnail_path(target, row)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(small)
    return True


def staging_of(out_dir: str, manifest: dict) -> str:
    """Where the run staged its images: its --staging-dir, else OUT/staging."""
    configured = ((manifest or {}).get("config") or {}).get("staging_dir")
    return configured or layout.staging_dir(out_dir)


def kept_thumbnails(out_dir: str, target: str, plan: Plan, images: np.ndarray, budget: int) -> None:
    """Thumbnails of kept samples among the first `budget` rows, from the shard tars, one
    shard at a time (only that shard's keys are held)."""
    wanted_rows = min(budget, plan.kept)
    if not wanted_rows:
        return
    for path in shards.tar_paths(layout.shards_dir(out_dir)):
        shard = layout.shard_of_tar(path)
        if shard not in plan.shard_names:
            continue
        rows = np.flatnonzero(plan.shard[:wanted_rows] == plan.shard_names.index(shard) + 1)
        wanted = dict(zip(plan.keys.take(pa.array(rows)).to_pylist(), rows.tolist()))
        for key, extension, _, data in shards.tar_members(path) if wanted else ():
            i = wanted.get(key)
            if i is not None and data is not None and extension in OUTPUT_FORMATS and not images[i]:
                images[i] = save_thumbnail(target, i, data.read())


def staged_thumbnail(target: str, staging: str, row: int, values: dict) -> bool:
    """A dropped candidate's thumbnail from its staged image, while staging holds it."""
    if not values.get("sha256") or not values.get("image_format"):
        return False
    staged = layout.staged_image(staging, values["sha256"], values["image_format"])
    return files.exists(staged) and save_thumbnail(target, row, files.read_file(staged))


# ------------------------------------------------------------------ pass 2: rows and captions


class Spill:
    """Rows arrive in ledger order and leave in explorer order: each goes, as its JSON text,
    to the bucket file of its BUCKET_ROWS-row range; then one bucket at a time is put in
    order and cut into rows and captions chunks. Memory: one batch, then one bucket."""

    def __init__(self, folder: str, rows: int):
        self.folder, self.rows = folder, rows
        self.bucket_rows = bucket_rows()
        self.handles = {}

    def add(self, row: int, values: list, caption: str) -> None:
        bucket = row // self.bucket_rows
        handle = self.handles.get(bucket)
        if handle is None:
            handle = self.handles[bucket] = open(os.path.join(self.folder, f"{bucket}.tsv"), "w", encoding="utf-8")
        # JSON text has no raw tab or newline: a line holds one row
        handle.write(f"{row}\t{json.dumps(values, ensure_ascii=False, separators=(',', ':'))}\t"
                     f"{json.dumps(caption, ensure_ascii=False)}\n")

    def write_chunks(self, target: str) -> None:
        for handle in self.handles.values():
            handle.close()
        for bucket in range(-(-self.rows // self.bucket_rows)):
            first = bucket * self.bucket_rows
            count = min(self.bucket_rows, self.rows - first)
            rows, captions = [None] * count, [None] * count
            path = os.path.join(self.folder, f"{bucket}.tsv")
            with open(path, encoding="utf-8") as f:
                for line in f:
                    row, values, caption = line.rstrip("\n").split("\t")
                    rows[int(row) - first], captions[int(row) - first] = values, caption
            os.remove(path)
            write_text_chunks(target, "rows", rows, first, ROWS_PER_CHUNK)
            write_text_chunks(target, "captions", captions, first, CAPTIONS_PER_CHUNK)


def bucket_rows() -> int:
    """A multiple of both chunk sizes, near 20,000 rows: a bucket holds whole chunks."""
    step = math.lcm(ROWS_PER_CHUNK, CAPTIONS_PER_CHUNK)
    return step * max(1, 20000 // step)


def write_text_chunks(target: str, kind: str, texts: list[str], first: int, size: int) -> None:
    """Chunks of JSON texts already made (rows `first`...), as write_data would write them."""
    for start in range(0, len(texts), size):
        name = chunk_name(kind, (first + start) // size)
        with open(data_path(target, name), "w", encoding="utf-8") as f:
            f.write(f"openwit.take({json.dumps(name)},[{','.join(texts[start:start + size])}]);\n")


class Pass2:
    """Every current row once, in ledger order: its JSON to the spill, its size bin, its
    matched entries, a dropped candidate's staged thumbnail."""

    def __init__(self, target: str, plan: Plan, spill: Spill, images: np.ndarray, staging: str, budget: int,
                 in_clusters: np.ndarray):
        self.target, self.plan, self.spill, self.images = target, plan, spill, images
        self.staging, self.budget = staging, budget
        self.size = np.zeros(plan.rows, dtype=np.uint8)
        self.entries, self.entry_rows = [], []
        # what a cluster strip shows of its rows, so that it loads no rows file (a strip's
        # members are scattered over the drops: at 1M, 20 strips touched ~400 rows files)
        self.in_clusters, self.faces = in_clusters, {}

    def add(self, at: int, batch: pa.RecordBatch) -> None:
        positions = self.plan.position[at:at + batch.num_rows]
        self.add_postings(positions, batch)
        for i, values in enumerate(batch.to_pylist()):
            row = int(positions[i])
            if row < 0:  # superseded by a later revision
                continue
            self.spill.add(row, compact(values), values.get("caption") or "")
            self.size[row] = size_bin(values)
            if self.in_clusters[row]:
                self.faces[row] = [values.get("uid"), values.get("status"), values.get("reason"), values.get("caption")]
            if row < self.budget and values.get("status") != KEPT:
                self.images[row] = staged_thumbnail(self.target, self.staging, row, values)

    def add_postings(self, positions: np.ndarray, batch: pa.RecordBatch) -> None:
        index = batch.schema.get_field_index("entry_ids")
        if index < 0:
            return
        lists = batch.column(index)
        entries = pc.list_flatten(lists).to_numpy(zero_copy_only=False)
        rows = positions[pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)]
        current = rows >= 0
        self.entries.append(entries[current].astype(np.int64))
        self.entry_rows.append(rows[current])


# ------------------------------------------------------------------ the timeline


def timeline(manifest: dict) -> list[dict]:
    """The run, then every takedown and update (retry/extend) of the manifest, by time."""
    manifest = manifest or {}
    events = [{"kind": "curate", "at": manifest.get("finished_at") or manifest.get("started_at"),
               "started_at": manifest.get("started_at"), "kept": (manifest.get("funnel") or {}).get("kept"),
               "candidates": (manifest.get("funnel") or {}).get("candidates")}]
    for entry in manifest.get("takedowns") or []:
        events.append({"kind": "takedown", **entry})
    for entry in manifest.get("updates") or []:
        events.append({"kind": entry.get("action") or "update", **entry})
    return sorted(events, key=lambda e: (e.get("at") or "", e["kind"]))


# ------------------------------------------------------------------ the folder


def shown_out(out_dir: str) -> str:
    """OUT as the page names it: a remote one (gs://, s3://, any scheme) as given, a local
    one absolute."""
    return out_dir if SCHEME.match(out_dir) else os.path.abspath(out_dir)


def meta(out_dir: str, manifest: dict, plan: Plan, sizes: list[int], n_entries: int, n_clusters: int,
         cluster_index: list[str]) -> dict:
    return {
        "out": shown_out(out_dir), "rows": plan.rows, "kept": plan.kept,
        "columns": COLUMNS, "rows_per_chunk": ROWS_PER_CHUNK, "captions_per_chunk": CAPTIONS_PER_CHUNK,
        "entries_per_chunk": ENTRIES_PER_CHUNK, "reasons": plan.reasons, "stages": list(STAGES),
        "languages": plan.languages, "other_language": OTHER_LANGUAGE, "shards": plan.shard_names,
        "language_funnel": plan.language_funnel,
        "sizes": [[code, size_label(code)] for code in sizes], "entries": n_entries, "clusters": n_clusters,
        "clusters_per_chunk": CLUSTERS_PER_CHUNK, "cluster_index": cluster_index,
        "funnel": ledger.funnel_from_drops(plan.rows, plan.dropped_per_stage, plan.kept),
        "timeline": timeline(manifest), "seed": (manifest or {}).get("seed"),
        # a worldwide run's t per language list (balance.json, as the manifest recorded it)
        "balancing_languages": ((manifest or {}).get("balancing") or {}).get("languages") or {},
        "openwit_version": (manifest or {}).get("openwit_version"), "report": "report.html",
    }


def copy_page(target: str) -> None:
    for name in PAGE_FILES:
        shutil.copyfile(os.path.join(ASSETS, name), os.path.join(target, name))


class NotAnExplorer(UserError):
    """The target folder holds files the explorer did not write."""


def is_marker(path: str) -> bool:
    if os.path.islink(path) or not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        head = f.read(64)
    return MARKER_LINE.fullmatch(head.decode("ascii", "replace")) is not None


def own_names() -> tuple:
    """Everything in DIR the explorer writes: all it may ever remove."""
    return (DATA, IMAGES, REPORT) + PAGE_FILES


def clear_earlier(target: str) -> None:
    """Remove what an earlier explorer wrote (a smaller output must not keep stale rows),
    and nothing else. A symbolic link where it writes is not its own: refused, so that
    neither the link's target is emptied nor a write goes through it."""
    for name in own_names():
        path = os.path.join(target, name)
        if os.path.islink(path):
            raise NotAnExplorer(f"{path} is a symbolic link, which the explorer never writes; "
                                "remove it or give another folder")
    for name in own_names():
        path = os.path.join(target, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)


def prepare_target(target: str) -> None:
    """A new or empty folder, or an explorer written before (it holds MARKER). Anything
    else is refused: openwit never removes a file it did not write. MARKER is written
    first, so an interrupted first write leaves a folder the next run accepts."""
    if os.path.lexists(target) and not os.path.isdir(target):
        raise NotAnExplorer(f"-o {target}: is a file, not a folder; give a new or empty folder")
    os.makedirs(target, exist_ok=True)
    marker = os.path.join(target, MARKER)
    others = [name for name in os.listdir(target) if name != MARKER]
    if others and not is_marker(marker):
        raise NotAnExplorer(f"{target} is not empty and was not written by `openwit audit explorer` "
                            f"(no {MARKER} file); give a new or empty folder")
    if os.path.islink(marker):  # only when nothing else is there: an odd leftover, not ours to follow
        raise NotAnExplorer(f"{marker} is a symbolic link; remove it or give another folder")
    with open(marker, "w", encoding="ascii") as f:
        f.write(MARKER_TEXT)
    clear_earlier(target)
    os.makedirs(os.path.join(target, DATA))


def write_explorer(out_dir: str, target: str, max_images=None, with_report: bool = True) -> dict:
    """Write the explorer of OUT into the folder `target`; -> what it holds (counts).

    Two passes over the ledger, a batch at a time: the first reads only the columns that
    order and filter rows (Keys), the second every column, spilling each row's JSON to a
    bucket by its place in explorer order (Spill). What stays in memory is per candidate a
    few small ids and its uid (~60 bytes), per duplicate drop its survivor and distances,
    per entry match 16 bytes, and one bucket of rows at a time."""
    with returning_memory():
        return write_all(out_dir, target, max_images, with_report)


def write_all(out_dir: str, target: str, max_images, with_report: bool) -> dict:
    manifest = read_manifest(out_dir)
    paths = ledger_paths(out_dir)
    keys = Keys()
    total = 0
    for at, batch in batches(paths, KEY_COLUMNS):
        keys.add(at, batch)
        total = at + batch.num_rows
    plan = Plan(keys, total)
    prepare_target(target)
    copy_page(target)
    budget = plan.rows if max_images is None else min(max_images, plan.rows)
    images = np.zeros(plan.rows, dtype=np.uint8)
    found = cluster_list(plan, keys.duplicates)
    keys.duplicates = []
    in_clusters = np.zeros(plan.rows, dtype=bool)
    for survivor, _, members in found:
        in_clusters[survivor] = True
        in_clusters[[m[0] for m in members]] = True
    with tempfile.TemporaryDirectory(prefix="openwit-explorer-") as scratch:
        spill = Spill(scratch, plan.rows)
        second = Pass2(target, plan, spill, images, staging_of(out_dir, manifest), budget, in_clusters)
        for at, batch in batches(paths, COLUMNS + ["original_width", "original_height", "image_format"]):
            second.add(at, batch)
        spill.write_chunks(target)
    kept_thumbnails(out_dir, target, plan, images, budget)
    write_data(target, "codes", encode_codes({"fate": plan.fate, "lang": plan.lang, "shard": plan.shard,
                                              "size": second.size, "image": images}))
    entries = entry_table(out_dir)
    write_data(target, "entries", entries)
    if second.entries:
        write_postings(target, np.concatenate(second.entries), np.concatenate(second.entry_rows))
    cluster_index = write_clusters(target, with_faces(found, second.faces))
    write_data(target, "meta", meta(out_dir, manifest, plan, sorted(np.unique(second.size).tolist()), len(entries),
                                    len(found), cluster_index))
    if with_report:
        from openwit.pipeline.audit.report import write_report

        write_report(out_dir, os.path.join(target, REPORT), explorer="index.html")
    return {"candidates": plan.rows, "images": int(images.sum()), "clusters": len(found), "entries": len(entries)}
