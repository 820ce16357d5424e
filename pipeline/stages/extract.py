"""Candidates (image URL, alt-text, page URL) from Common Crawl WARC and WAT files.

WARC: every HTML response is parsed (stdlib html.parser, charset from the HTTP header, then
a <meta> tag, then UTF-8 with replacement); each <img> with a non-empty alt is a candidate.
Its URL is `src`, else a lazy-load attribute (data-src, data-lazy-src, data-original), else
the widest `srcset` entry, resolved against the page URL and <base href>; `data:` URIs are
skipped. WAT: the JSON metadata's `IMG@/src` links with their alt text.

Each candidate row carries its WARC record id. A record that cannot be parsed becomes one
malformed row with the reason, so it reaches the ledger instead of failing the run.
"""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Iterator, Optional
from urllib.parse import urljoin

from openwit.pipeline.stages.read import MALFORMED, SOURCE

LAZY_ATTRIBUTES = ("data-src", "data-lazy-src", "data-original")
_CHARSET = re.compile(rb"""<meta[^>]+charset=["']?([\w-]+)""", re.IGNORECASE)


class ImageFinder(HTMLParser):
    """Collects <base href> and every <img>'s attributes, in document order."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.base: Optional[str] = None
        self.images: list[dict] = []

    def handle_starttag(self, tag, attrs):
        attributes = {name.lower(): (value or "") for name, value in attrs}
        if tag == "base" and self.base is None and attributes.get("href"):
            self.base = attributes["href"]
        elif tag == "img":
            self.images.append(attributes)


def widest_srcset(srcset: str) -> str:
    """The candidate with the largest width (or density) descriptor; the first on ties."""
    best, best_size = "", -1.0
    for part in srcset.split(","):
        pieces = part.strip().split()
        if not pieces:
            continue
        size = 1.0
        if len(pieces) > 1 and pieces[1][:-1].replace(".", "", 1).isdigit():
            size = float(pieces[1][:-1])
        if size > best_size:
            best, best_size = pieces[0], size
    return best


def image_url(attributes: dict) -> str:
    for name in ("src", *LAZY_ATTRIBUTES):
        value = attributes.get(name, "").strip()
        if value and not value.lower().startswith("data:"):
            return value
    return widest_srcset(attributes.get("srcset", ""))


def candidates_from_html(html: str, page_url: str) -> Iterator[tuple[str, str]]:
    """(absolute image URL, alt text) of every <img> with an alt and a usable URL."""
    finder = ImageFinder()
    finder.feed(html)
    finder.close()
    base = urljoin(page_url, finder.base) if finder.base else page_url
    for attributes in finder.images:
        alt = " ".join(attributes.get("alt", "").split())
        url = image_url(attributes)
        if alt and url and not url.lower().startswith("data:"):
            yield urljoin(base, url), alt


def decode_html(body: bytes, content_type: str) -> str:
    match = re.search(r"charset=([\w-]+)", content_type or "", re.IGNORECASE)
    charset = match.group(1) if match else None
    if charset is None:
        meta = _CHARSET.search(body[:4096])
        charset = meta.group(1).decode("ascii") if meta else "utf-8"
    try:
        return body.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        return body.decode("utf-8", errors="replace")


def archive_rows(stream, kind: str, record_rows) -> Iterator[dict]:
    """Rows from every record of a WARC-format stream (gzipped or not): record_rows(record)
    yields a record's candidate rows. A record that fails becomes one dead-letter row; a
    corrupt or truncated archive ends with one, keeping what was read before."""
    from warcio.archiveiterator import ArchiveIterator

    records = ArchiveIterator(stream)
    try:
        for record in records:
            record_id = record.rec_headers.get_header("WARC-Record-ID")
            try:
                yield from record_rows(record, record_id)
            except Exception as err:  # noqa: BLE001 - one bad page becomes one dead-letter row
                yield {MALFORMED: f"{kind} record {record_id}: {type(err).__name__}: {err}"[:300], SOURCE: record_id}
    except Exception as err:  # noqa: BLE001 - a truncated or corrupt archive: keep what was read
        yield {MALFORMED: f"{kind} stream: {type(err).__name__}: {err}"[:300]}
    # warcio reports a damaged record (bad length, truncation) on stderr and goes on: count it.
    if getattr(records, "err_count", 0):
        yield {MALFORMED: f"{kind} stream: {records.err_count} damaged record(s) (truncated or bad length)"}


def warc_rows(stream) -> Iterator[dict]:
    """Candidate rows from a WARC stream of HTML responses."""
    return archive_rows(stream, "WARC", html_response_rows)


def html_response_rows(record, record_id: str) -> Iterator[dict]:
    if record.rec_type != "response" or record.http_headers is None:
        return
    content_type = record.http_headers.get_header("Content-Type") or ""
    if "html" not in content_type.lower():
        return
    page_url = record.rec_headers.get_header("WARC-Target-URI")
    html = decode_html(record.content_stream().read(), content_type)
    for url, alt in candidates_from_html(html, page_url):
        yield {"url": url, "caption": alt, "page_url": page_url, SOURCE: record_id}


def wat_rows(stream) -> Iterator[dict]:
    """Candidate rows from a WAT stream: each metadata record's image links with alt text."""
    return archive_rows(stream, "WAT", wat_metadata_rows)


def wat_metadata_rows(record, record_id: str) -> Iterator[dict]:
    if record.rec_type == "metadata":
        yield from wat_record_rows(json.loads(record.content_stream().read()), record_id)


def wat_record_rows(envelope: dict, record_id: str) -> Iterator[dict]:
    env = envelope["Envelope"]
    page_url = env["WARC-Header-Metadata"].get("WARC-Target-URI")
    html = env.get("Payload-Metadata", {}).get("HTTP-Response-Metadata", {}).get("HTML-Metadata")
    if not html or not page_url:
        return
    base = html.get("Head", {}).get("Base")
    base = urljoin(page_url, base) if base else page_url
    for link in html.get("Links", []):
        alt = " ".join((link.get("alt") or "").split())
        url = (link.get("url") or "").strip()
        if link.get("path") == "IMG@/src" and alt and url and not url.lower().startswith("data:"):
            yield {"url": urljoin(base, url), "caption": alt, "page_url": page_url, SOURCE: record_id}
