"""The one registry of drop reasons shared by every stage and by the audit tools.

A reason is permanent when retrying the same candidate cannot change the outcome (a 404,
a caption with no vocabulary entry), and transient when it can (a timeout, a 503). Later
issues retry transient drops only, so every reason must say which it is.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reason:
    name: str
    stage: str
    transient: bool
    description: str


STAGES = ("read", "text", "match", "balance_pre", "download", "image", "dedup", "balance_final", "write")

_REASONS = [
    Reason("malformed_row", "read", False, "the input row cannot be parsed (e.g. a broken JSON line)"),
    Reason("missing_url", "read", False, "the input row has no url"),
    Reason("missing_caption", "read", False, "the input row has no caption"),
    Reason("unsupported_scheme", "read", False, "the url is not http or https"),
    Reason("caption_too_short", "text", False, "the caption has too few characters or words"),
    Reason("language_not_allowed", "text", False, "the detected caption language is not in --languages"),
    Reason("unmatched", "match", False, "the caption contains no vocabulary entry"),
    Reason("balanced_out_pre", "balance_pre", False, "not drawn by balancing before download (cap t x slack)"),
    Reason("http_client_error", "download", False, "the server answered 4xx (not 408/429)"),
    Reason("http_server_error", "download", True, "the server answered 5xx, 408 or 429"),
    Reason("timeout", "download", True, "no complete answer within the deadline"),
    Reason("connection_error", "download", True, "the connection failed or was reset"),
    Reason("request_error", "download", False, "invalid URL, too many redirects or a broken body"),
    Reason("too_large", "download", False, "the body exceeded the byte cap"),
    Reason("not_image", "image", False, "the body is not a decodable image"),
    Reason("image_error", "image", False, "the image could not be hashed, resized or encoded"),
    Reason("image_too_small", "image", False, "the image is below the minimum side"),
    Reason("aspect_ratio", "image", False, "the image's aspect ratio exceeds the maximum"),
    Reason("duplicate_image", "dedup", False, "the same image bytes were kept for another uid"),
    Reason("balanced_out_final", "balance_final", False, "not drawn by balancing of the survivors (cap t)"),
]

# Raised by openwit's own code, in whichever stage it happened: a bug, recorded instead of
# failing the whole run. Transient, because a fixed version should retry these candidates.
INTERNAL_ERROR = Reason("internal_error", "*", True, "an unexpected error in openwit; the detail names it")
_REASONS.append(INTERNAL_ERROR)

REASONS: dict[str, Reason] = {r.name: r for r in _REASONS}


def reason(name: str) -> Reason:
    """Look a reason up by name; an unknown name is a programming error."""
    try:
        return REASONS[name]
    except KeyError:
        raise KeyError(f"unknown drop reason {name!r}; add it to schemas/reasons.py") from None
