"""Fetch image bytes over HTTP: keep-alive sessions, a deadline per URL, a byte cap
enforced while streaming, and a few retries with exponential backoff on transient
failures (timeouts, connection errors, 408/429/5xx).

`fetch` is a plain function over a requests.Session; the Beam DoFn in pipeline/run.py
runs many of them concurrently over a batch. (Issue 5 makes this stage polite and safe:
robots opt-out headers, private-address refusal, Retry-After.)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import requests
import urllib3

from openwit.pipeline import __version__
from openwit.schemas.reasons import REASONS

_TRANSIENT_STATUS = {408, 429}


@dataclass(frozen=True)
class DownloadConfig:
    timeout: float = 10.0  # total seconds per attempt: connect + headers + body
    retries: int = 2
    backoff: float = 0.5  # seconds before the first retry, doubled each time
    max_image_bytes: int = 20 * 1024 * 1024
    user_agent: str = f"openwit/{__version__} (+https://github.com/openwit/openwit)"
    threads: int = 32


@dataclass(frozen=True)
class FetchResult:
    body: Optional[bytes]
    http_status: Optional[int] = None
    reason: Optional[str] = None  # a name from schemas/reasons.py when body is None
    detail: str = ""

    @property
    def transient(self) -> bool:
        return self.reason is not None and REASONS[self.reason].transient


def make_session(cfg: DownloadConfig) -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = cfg.user_agent
    adapter = requests.adapters.HTTPAdapter(pool_connections=cfg.threads, pool_maxsize=cfg.threads)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def fetch_once(session: requests.Session, url: str, cfg: DownloadConfig) -> FetchResult:
    deadline = time.monotonic() + cfg.timeout
    try:
        with session.get(url, stream=True, timeout=cfg.timeout) as response:
            status = response.status_code
            if status >= 500 or status in _TRANSIENT_STATUS:
                return FetchResult(None, status, "http_server_error", f"HTTP {status}")
            if status >= 400:
                return FetchResult(None, status, "http_client_error", f"HTTP {status}")
            chunks, size = [], 0
            # read1 returns whatever has arrived (iter_content waits for a full chunk, so a
            # server dripping a byte at a time would never reach the deadline check)
            while chunk := response.raw.read1(64 * 1024, decode_content=True):
                size += len(chunk)
                if size > cfg.max_image_bytes:
                    return FetchResult(None, status, "too_large", f"over {cfg.max_image_bytes} bytes")
                if time.monotonic() > deadline:  # a server that drips bytes must not hold us
                    return FetchResult(None, status, "timeout", f"body not done in {cfg.timeout}s")
                chunks.append(chunk)
            return FetchResult(b"".join(chunks), status)
    except (requests.Timeout, urllib3.exceptions.ReadTimeoutError) as err:  # the latter: a stalled body
        return FetchResult(None, None, "timeout", type(err).__name__)
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError) as err:
        return FetchResult(None, None, "connection_error", type(err).__name__)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as err:  # invalid URL, redirect loop, bad gzip: permanent
        return FetchResult(None, None, "request_error", f"{type(err).__name__}: {err}"[:200])


def fetch(session: requests.Session, url: str, cfg: DownloadConfig, sleep=time.sleep) -> FetchResult:
    """fetch_once with retries on transient failures, backing off 1x, 2x, 4x ..."""
    result = fetch_once(session, url, cfg)
    for attempt in range(cfg.retries):
        if not result.transient:
            break
        sleep(cfg.backoff * (2**attempt))
        result = fetch_once(session, url, cfg)
    return result
