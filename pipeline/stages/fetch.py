"""One candidate through download and image processing, with the result staged.

Processed images are staged content-addressed (by the sha256 of the original bytes) under
the output, so shuffles carry metadata only and the shard writer reads the staged file.
"""
from __future__ import annotations

import os
from typing import Callable

from apache_beam.io.filesystems import FileSystems

from openwit.pipeline.stages.download import Downloader, FetchResult
from openwit.pipeline.stages.image import ImageConfig, ImageRejected, process_image
from openwit.pipeline.stages.write import write_atomically
from openwit.schemas.record import Record, drop


def staged_path(staging_dir: str, sha256: str, extension: str) -> str:
    return FileSystems.join(staging_dir, sha256[:2], f"{sha256}.{extension}")


def stage_image(staging_dir: str, sha256: str, extension: str, data: bytes) -> str:
    path = staged_path(staging_dir, sha256, extension)
    exists = os.path.exists(path) if "://" not in path else FileSystems.exists(path)
    if not exists:  # identical originals give identical processed bytes
        write_atomically(path, data)
    return path


def fetch_record(
    record: Record,
    downloader: Downloader,
    image: ImageConfig,
    stage: Callable[[str, str, bytes], str],
) -> Record:
    """Download, decode, check and resize one candidate; a dropped record says why not."""
    return record_from_download(record, downloader.fetch(record.url), image, stage)


def record_from_download(
    record: Record, result: FetchResult, image: ImageConfig, stage: Callable[[str, str, bytes], str]
) -> Record:
    """The record after its download: dropped with the reason, or processed and staged."""
    record = record.update(http_status=result.http_status)
    if result.body is None:
        return drop(record, result.reason, result.detail)
    processed = process_image(result.body, image)
    if isinstance(processed, ImageRejected):
        return drop(record, processed.reason, processed.detail)
    return record.update(
        sha256=processed.sha256,
        stored_sha256=processed.stored_sha256,
        width=processed.width,
        height=processed.height,
        original_width=processed.original_width,
        original_height=processed.original_height,
        phash=processed.phash,
        image_format=image.output_format,
        image_path=stage(processed.sha256, image.output_format, processed.data),
    )
