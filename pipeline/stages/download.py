"""The download stage's decision for one candidate: what its download makes of the record.

`record_from_download` turns a `DownloadResult` into the record: dropped with the download's
reason, dropped with the image rule that refused it, or processed and staged. `lasting` says
whether that outcome would be the same next time, and so whether it earns a receipt
(pipeline/download/staging.py): a success or a permanent failure does; a transient failure
(timeouts, 5xx, DNS) does not, so a rerun tries it again. The HTTP side is
pipeline/download/client.py; the Beam side is pipeline/beam/download_fn.py.
"""
from __future__ import annotations

from typing import Callable

from openwit.pipeline.download.client import DownloadResult
from openwit.pipeline.stages.image import ImageConfig, ImageRejected, process_image
from openwit.schemas.reasons import REASONS
from openwit.schemas.record import DROPPED, Record, drop


def lasting(record: Record) -> bool:
    """Whether the download's outcome would be the same next time: kept going, or a permanent drop."""
    if record.status != DROPPED:
        return True
    return not REASONS[record.reason].transient  # internal_error is transient: a fixed version retries it


def record_from_download(
    record: Record, result: DownloadResult, image: ImageConfig, stage: Callable[[str, str, bytes], str]
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
        colour_sig=processed.colour_sig,
        image_format=image.output_format,
        image_path=stage(processed.sha256, image.output_format, processed.data),
    )
