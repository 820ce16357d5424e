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


STAGES = ("read", "text", "match", "url_dedup", "balance_pre", "download", "image", "score", "dedup", "balance_final", "write", "takedown")

_REASONS = [
    Reason("malformed_row", "read", False, "the input row cannot be parsed (e.g. a broken JSON line)"),
    Reason("missing_url", "read", False, "the input row has no url"),
    Reason("missing_caption", "read", False, "the input row has no caption"),
    Reason("unsupported_scheme", "read", False, "the url is not http or https"),
    Reason("credentials_in_url", "read", False, "the url holds a user name or password: never requested, "
           "and the ledger row's url has them removed"),
    Reason("caption_too_short", "text", False, "the caption has too few characters or words"),
    Reason("caption_filename", "text", False, "the alt-text is a file name (IMG_1234.jpg, DSC01234)"),
    Reason("caption_url", "text", False, "the alt-text is only a URL"),
    Reason("caption_no_letters", "text", False, "the alt-text has no letters (digits and punctuation only)"),
    Reason("caption_blocklisted", "text", False, "the caption contains a word or phrase of --caption-blocklist"),
    Reason("language_not_allowed", "text", False, "the detected caption language is not in --languages"),
    Reason("language_uncertain", "text", False, "language ID confidence below --min-language-score"),
    Reason("unmatched", "match", False, "the caption contains no vocabulary entry"),
    Reason("language_without_vocabulary", "match", False, "--worldwide: the caption's language has no "
           "vocabulary list (docs/vocabulary.md)"),
    Reason("balanced_out_pre", "balance_pre", False, "not drawn by balancing before download (cap t x slack)"),
    Reason("invalid_url", "download", False, "the url cannot be parsed or has no host"),
    Reason("blocked_address", "download", False, "the host is or resolves to a private, loopback, link-local, "
           "multicast, reserved or otherwise non-global address"),
    Reason("dns_failure", "download", True, "the host name did not resolve"),
    Reason("domain_unavailable", "download", True, "not attempted: the host was paused by the circuit breaker "
           "after most of its recent attempts failed (the detail says how many)"),
    Reason("connection_refused", "download", True, "the server refused the connection"),
    Reason("connection_reset", "download", True, "the connection broke before the body was complete"),
    Reason("tls_error", "download", False, "the TLS handshake or certificate failed"),
    Reason("timeout", "download", True, "the server stayed silent too long (--connect-timeout, --first-byte-timeout, "
           "--timeout between reads) or one request passed --total-timeout; the detail says which"),
    Reason("http_404", "download", False, "the server answered 404 or 410"),
    Reason("http_4xx", "download", False, "the server answered another 4xx, or an unexpected status"),
    Reason("http_429", "download", True, "the server answered 429 or 408 (slow down / try later)"),
    Reason("http_5xx", "download", True, "the server answered 5xx"),
    Reason("too_many_redirects", "download", False, "more redirects than --max-redirects"),
    Reason("unsupported_redirect", "download", False, "a redirect to a scheme other than http or https"),
    Reason("protocol_error", "download", False, "a malformed HTTP answer (bad headers, redirect without Location)"),
    Reason("opted_out", "download", False, "an X-Robots-Tag directive for all agents or for openwit forbids this "
           "use (noai, noimageai, noindex, noimageindex, none)"),
    Reason("too_large", "download", False, "the body exceeded --max-image-bytes"),
    Reason("credentials_in_redirect", "download", False, "a redirect to a url holding a user name or password: "
           "not followed (they would be sent as Basic auth)"),
    Reason("not_image", "image", False, "the body is not an image of an allowed format: JPEG, PNG, WebP, GIF, BMP "
           "(e.g. HTML served as image/jpeg, or EPS, TIFF)"),
    Reason("decode_error", "image", False, "the image is truncated or corrupt (header or pixel data)"),
    Reason("bomb", "image", False, "the image has more pixels than --max-pixels, or its decode needs more "
           "memory than --max-decoded-bytes (decompression bomb)"),
    Reason("image_error", "image", False, "the image could not be hashed, resized or encoded"),
    Reason("image_too_small", "image", False, "the image is below the minimum side"),
    Reason("aspect_ratio", "image", False, "the image's aspect ratio exceeds the maximum"),
    Reason("duplicate_url", "url_dedup", False, "the same normalised URL is downloaded for another uid (before download)"),
    Reason("eval_contamination", "dedup", False, "the image is within --near-dup-distance of an image of the "
           "--decontaminate eval set; the detail names the eval item"),
    Reason("duplicate_image", "dedup", False, "the same image bytes were kept for another uid"),
    Reason("near_duplicate", "dedup", False, "a perceptually near-identical image (pHash within "
           "--near-dup-distance) was kept for another uid"),
    Reason("low_clip_score", "score", False, "the image-text cosine of --score-model (an openwit checkpoint) is "
           "below --min-score; the ledger's clip_score holds it"),
    Reason("balanced_out_final", "balance_final", False, "not drawn by balancing of the survivors (cap t)"),
    Reason("takedown", "takedown", False, "removed after release by `openwit takedown` (an owner's request); "
           "the row's recorded_at says when"),
    Reason("taken_down", "takedown", False, "on OUT's takedown blocklist (a URL, page, domain or uid taken down "
           "before, or the same picture: its sha256, or a pHash within --near-dup-distance); never published"),
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
