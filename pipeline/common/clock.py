"""The one timestamp format: UTC, ISO 8601 to the second. The manifest's start and finish
times, the ledger's recorded_at and the log entries of later changes all use it."""
from __future__ import annotations

import datetime as dt


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
