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
    DIR/data/clusters.js    duplicate clusters: survivor, members, their distances
    DIR/img/NNNNN/ROW.jpg   thumbnails: kept samples from the shards, dropped candidates from
                            their staged image where one exists

A candidate's row number is its place in explorer order: kept samples first (by shard and
key), then drops by stage (pipeline order), reason and uid. Each reason's rows are
contiguous, so a reason filter loads only its own chunks.
"""
from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
from collections import Counter

import numpy as np

from openwit.pipeline.common.errors import UserError
from openwit.pipeline.output import files, layout, ledger, shards
from openwit.pipeline.output.manifest import read_manifest
from openwit.pipeline.stages.image import OUTPUT_FORMATS
from openwit.schemas.reasons import REASONS, STAGES
from openwit.schemas.record import KEPT

ROWS_PER_CHUNK = 1000
CAPTIONS_PER_CHUNK = 10000
ENTRIES_PER_CHUNK = 1000
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


def fate(row: dict):
    """KEPT, or (stage, reason) of a drop: one reason name (internal_error) occurs at several
    stages, and each is its own fate."""
    return KEPT if row["status"] == KEPT else (row["stage"], row["reason"] or "unknown")


def stage_rank(stage) -> int:
    return STAGES.index(stage) if stage in STAGES else len(STAGES)


def explorer_order(rows: list[dict]) -> list[dict]:
    """Kept first (shard, key), then drops by stage in pipeline order, reason, uid."""
    def key(row):
        if row["status"] == KEPT:
            return (0, 0, "", row["shard"] or "", row["key"] or "", row["uid"])
        return (1, stage_rank(row["stage"]), row["reason"] or "", "", "", row["uid"])
    return sorted(rows, key=key)


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


def reason_list(rows: list[dict]) -> list[dict]:
    """The drop reasons present, in explorer order, with their registry text and counts."""
    counts = Counter(fate(row) for row in rows if row["status"] != KEPT)
    found = []
    for (stage, name), n in sorted(counts.items(), key=lambda kv: (stage_rank(kv[0][0]), kv[0][1])):
        known = REASONS.get(name)
        found.append({"name": name, "stage": stage, "count": n,
                      "transient": known.transient if known else None,
                      "description": known.description if known else "not in this openwit's reason registry"})
    return found


def codes(rows: list[dict], reasons: list[dict], languages: list[str], shard_names: list[str],
          images: np.ndarray) -> dict:
    """Per-row filter codes as base64 byte arrays (shard: uint16 little-endian)."""
    fate_code = {KEPT: 0, **{(r["stage"], r["name"]): i + 1 for i, r in enumerate(reasons)}}
    lang_code = {lang: i for i, lang in enumerate(languages)}
    shard_code = {name: i + 1 for i, name in enumerate(shard_names)}
    arrays = {
        "fate": np.array([fate_code[fate(r)] for r in rows], dtype=np.uint8),
        "lang": np.array([lang_code.get(r["language"], OTHER_LANGUAGE) for r in rows], dtype=np.uint8),
        "shard": np.array([shard_code.get(r["shard"], 0) for r in rows], dtype="<u2"),
        "size": np.array([size_bin(r) for r in rows], dtype=np.uint8),
        "image": images.astype(np.uint8),
    }
    return {name: base64.b64encode(array.tobytes()).decode() for name, array in arrays.items()}


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


def clusters(rows: list[dict]) -> list[list]:
    """[survivor row, survivor uid, [[member row, reason, distances], ...]] for every
    survivor of a duplicate drop, largest cluster first."""
    row_of = {row["uid"]: i for i, row in enumerate(rows)}
    members = {}
    for i, row in enumerate(rows):
        if row["status"] != KEPT and row["reason"] in DUPLICATE_REASONS and row["duplicate_of"] in row_of:
            members.setdefault(row_of[row["duplicate_of"]], []).append([i, row["reason"], parse_distances(row["detail"])])
    ordered = sorted(members.items(), key=lambda kv: (-len(kv[1]), rows[kv[0]]["uid"]))
    return [[survivor, rows[survivor]["uid"], sorted(group, key=lambda m: (m[2].get("phash", 0), rows[m[0]]["uid"]))]
            for survivor, group in ordered]


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


def postings(rows: list[dict]) -> dict:
    """entry id -> the rows whose caption matched it."""
    found = {}
    for i, row in enumerate(rows):
        for entry in row.get("entry_ids") or ():
            found.setdefault(entry, []).append(i)
    return found


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


def write_thumbnails(out_dir: str, target: str, rows: list[dict], staging: str, limit) -> np.ndarray:
    """Thumbnails of kept samples (from the shard tars) and of dropped candidates with a
    staged image, in row order, at most `limit` (None: all). -> 1 per row with one."""
    images = np.zeros(len(rows), dtype=np.uint8)
    budget = len(rows) if limit is None else limit
    kept_row = {(r["shard"], r["key"]): i for i, r in enumerate(rows) if r["status"] == KEPT}
    wanted = {key: i for key, i in kept_row.items() if i < budget}
    for path in shards.tar_paths(layout.shards_dir(out_dir)) if wanted else ():
        shard = layout.shard_of_tar(path)
        for key, extension, _, data in shards.tar_members(path):
            i = wanted.get((shard, key))
            if i is not None and data is not None and extension in OUTPUT_FORMATS and not images[i]:
                images[i] = save_thumbnail(target, i, data.read())
    for i, row in enumerate(rows[:budget]):
        if row["status"] != KEPT and row.get("sha256") and row.get("image_format"):
            staged = layout.staged_image(staging, row["sha256"], row["image_format"])
            if files.exists(staged):
                images[i] = save_thumbnail(target, i, files.read_file(staged))
    return images


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


def load_rows(out_dir: str) -> list[dict]:
    state = ledger.current_state(ledger.read_ledger(out_dir))
    return explorer_order(state.to_pylist())


def shown_out(out_dir: str) -> str:
    """OUT as the page names it: a remote one (gs://, s3://, any scheme) as given, a local
    one absolute."""
    return out_dir if SCHEME.match(out_dir) else os.path.abspath(out_dir)


def meta(out_dir: str, manifest: dict, rows: list[dict], reasons: list[dict], languages: list[str],
         shard_names: list[str], n_entries: int, n_clusters: int) -> dict:
    sizes = sorted({size_bin(r) for r in rows})
    return {
        "out": shown_out(out_dir), "rows": len(rows), "kept": sum(r["status"] == KEPT for r in rows),
        "columns": COLUMNS, "rows_per_chunk": ROWS_PER_CHUNK, "captions_per_chunk": CAPTIONS_PER_CHUNK,
        "entries_per_chunk": ENTRIES_PER_CHUNK, "reasons": reasons, "stages": list(STAGES),
        "languages": languages, "other_language": OTHER_LANGUAGE, "shards": shard_names,
        "sizes": [[code, size_label(code)] for code in sizes], "entries": n_entries, "clusters": n_clusters,
        "funnel": ledger.funnel_from_drops(len(rows), Counter(r["stage"] for r in rows if r["status"] != KEPT),
                                           sum(r["status"] == KEPT for r in rows)),
        "timeline": timeline(manifest), "seed": (manifest or {}).get("seed"),
        "openwit_version": (manifest or {}).get("openwit_version"), "report": "report.html",
    }


def write_chunks(target: str, kind: str, values: list, size: int) -> None:
    for start in range(0, len(values), size):
        write_data(target, chunk_name(kind, start // size), values[start:start + size])


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
    """Write the explorer of OUT into the folder `target`; -> what it holds (counts)."""
    manifest = read_manifest(out_dir)
    rows = load_rows(out_dir)
    prepare_target(target)
    copy_page(target)
    reasons = reason_list(rows)
    languages = [lang for lang, _ in Counter(r["language"] for r in rows if r["language"]).most_common(OTHER_LANGUAGE)]
    shard_names = sorted({r["shard"] for r in rows if r["shard"]})
    images = write_thumbnails(out_dir, target, rows, staging_of(out_dir, manifest), max_images)
    write_data(target, "codes", codes(rows, reasons, languages, shard_names, images))
    write_chunks(target, "rows", [compact(r) for r in rows], ROWS_PER_CHUNK)
    write_chunks(target, "captions", [r["caption"] or "" for r in rows], CAPTIONS_PER_CHUNK)
    entries = entry_table(out_dir)
    write_data(target, "entries", entries)
    by_chunk = {}
    for entry, found_rows in sorted(postings(rows).items()):
        by_chunk.setdefault(entry // ENTRIES_PER_CHUNK, {})[str(entry)] = found_rows
    for chunk, lists in by_chunk.items():
        write_data(target, chunk_name("postings", chunk), lists)
    found = clusters(rows)
    write_data(target, "clusters", found)
    write_data(target, "meta", meta(out_dir, manifest, rows, reasons, languages, shard_names, len(entries),
                                    len(found)))
    if with_report:
        from openwit.pipeline.audit.report import write_report

        write_report(out_dir, os.path.join(target, REPORT), explorer="index.html")
    return {"candidates": len(rows), "images": int(images.sum()), "clusters": len(found), "entries": len(entries)}
