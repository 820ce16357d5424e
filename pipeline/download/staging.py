"""Staged images and download receipts, under the output's staging folder.

Processed images are staged content-addressed (by the sha256 of the original bytes), so
shuffles carry metadata only and the shard writer reads the staged file.

A download with a lasting outcome leaves a small receipt, keyed by URL and the image and
download settings. That is a success, or a permanent failure (404, not an image, opted out,
...). A rerun (after a crash, `--retry-failed`, `--extend`) reuses the receipt instead of
downloading again. Receipts live under staging/fetched/ (the folder name is kept: outputs
written before the rename must stay reusable).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Optional

from openwit.pipeline.output import layout
from openwit.pipeline.output.files import exists, read_file, write_atomically
from openwit.pipeline.stages.image import ImageConfig
from openwit.schemas.record import DROPPED, Record, drop


def stage_image(staging_dir: str, sha256: str, extension: str, data: bytes) -> str:
    path = layout.staged_image(staging_dir, sha256, extension)
    if not exists(path):  # identical originals give identical processed bytes
        write_atomically(path, data)
    return path


# What a successful download adds to a record. The staged path is not stored: it follows from
# sha256 and format, so a receipt stays right if the output directory moves.
RECEIPT_FIELDS = ("http_status", "sha256", "stored_sha256", "width", "height", "original_width",
                  "original_height", "phash", "image_format", "colour_sig")


def receipt_key(url: str, image: ImageConfig, download) -> str:
    """Same URL and same settings -> same key; any setting that could change the result
    (size, format, quality, caps) changes it."""
    settings = json.dumps([url, dataclasses.asdict(image), dataclasses.asdict(download)], sort_keys=True, default=str)
    return hashlib.sha256(settings.encode("utf-8")).hexdigest()


def save_receipt(staging_dir: str, key: str, record: Record) -> None:
    if record.status == DROPPED:
        fields = {"reason": record.reason, "detail": record.detail, "http_status": record.http_status}
    else:
        fields = {name: getattr(record, name) for name in RECEIPT_FIELDS}
    write_atomically(layout.receipt(staging_dir, key), json.dumps(fields, sort_keys=True).encode("utf-8"))


def reuse_receipt(staging_dir: str, key: str, record: Record) -> Optional[Record]:
    """The record as an earlier download of the same URL left it, or None if there is no
    receipt, it lacks a field this version records (e.g. colour_sig), or its staged image is
    gone (then the URL is downloaded again)."""
    path = layout.receipt(staging_dir, key)
    if not exists(path):
        return None
    try:
        fields = json.loads(read_file(path))
    except ValueError:  # cannot happen with atomic writes, but a bad receipt only costs a download
        return None
    if fields.get("reason"):  # a permanent failure: never asked again
        return drop(record.update(http_status=fields.get("http_status")), fields["reason"], fields.get("detail") or "")
    if any(name not in fields for name in RECEIPT_FIELDS):  # written by an older openwit: redo it
        return None
    image_path = layout.staged_image(staging_dir, fields.get("sha256") or "", fields.get("image_format") or "")
    if not exists(image_path):
        return None
    return record.update(image_path=image_path, **{name: fields.get(name) for name in RECEIPT_FIELDS})
