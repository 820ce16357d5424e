"""Candidates (image URL, alt-text, page URL) from Common Crawl WARC and WAT files.

WARC: every HTML response is parsed (stdlib html.parser, charset from the HTTP header, then
a <meta> tag, then UTF-8 with replacement); each <img> with a non-empty alt is a candidate.
Its URL is `src`, else a lazy-load attribute (data-src, data-lazy-src, data-original), else
the widest `srcset` entry, resolved against the page URL and <base href>; `data:` URIs are
skipped. WAT: the JSON metadata's `IMG@/src` links with their alt text.

Each candidate row carries its WARC record id. A record that cannot be parsed becomes one
malformed row with the reason, so it reaches the ledger instead of failing the run; so does
each damaged stretch of the file, after which reading resyncs at the next whole record
(archive_rows; the rule is in docs/provenance.md, "Damaged inputs").
"""
from __future__ import annotations

import io
import json
import re
import zlib
from dataclasses import dataclass
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


# --- Archive framing with resync -------------------------------------------------------------
# warcio's ArchiveIterator stops at the first damaged gzip member, and a record cut short by
# the end of the file goes by with a warning on stderr. So the framing is ours: gzip members
# one by one (zlib), WARC records by their header block and Content-Length. After damage the
# reader resyncs: at the next gzip header whose data inflates, then its first "WARC/1." line
# (compressed files; records split across members are joined), or at the next line that
# starts with "WARC/1." (uncompressed); re-reading is bounded (Buffer.credit). Each damaged stretch
# becomes one dead-letter row; warcio still parses each whole record (HTTP headers, chunked
# and compressed bodies). Memory stays bounded: the file is streamed in CHUNK pieces and a
# record's content is kept only up to MAX_RECORD_BYTES.
CHUNK = 1 << 20
MAX_RECORD_BYTES = 32 << 20  # a longer record of a wanted type is a dead letter, read past
MAX_HEADER_BYTES = 64 << 10
REREAD_FACTOR = 4  # bytes put back to rescan after damage: at most this many per byte read
MAX_REWIND_BYTES = 64 << 20  # compressed bytes of one gzip member kept to rescan it after damage
MEMBER_PIECE = 1 << 16  # compressed bytes given to zlib at a time (most members are smaller)
GZIP_MAGIC = b"\x1f\x8b\x08"
PROBE_BYTES = 4096  # of a gzip member, enough to inflate the "WARC/" its data starts with
BLANK = b"\r\n\x00"  # bytes tolerated between records and members


class Damage(Exception):
    """Bad gzip data, or a file that ends inside a gzip member."""


class BadRecord(Exception):
    """Bytes that are not a whole WARC record where one should start."""


class CutShort(BadRecord):
    """A record (or its header) cut by the end of the stream: args are the message, the parts
    taken, the bytes the whole record needs (or one more than taken, when its header is cut)
    and how many of the last bytes to put back at least when rescanning."""


@dataclass
class Piece:
    """One framed record (fields: its WARC header, block: its content, up to the limit), or
    one damaged stretch (error). offset: where it starts in the file (for a gzipped file, the
    offset of its gzip member)."""
    offset: int
    error: Optional[str] = None
    fields: Optional[dict] = None
    head: bytes = b""
    block: bytes = b""
    length: int = 0


class Buffer:
    """A forward reader over more() (a piece of bytes, b"" at the end) with look-ahead,
    push-back and the count of bytes consumed (offset)."""

    def __init__(self, more):
        self.more = more
        self.data = bytearray()  # deleting from the front of a bytearray does not copy
        self.offset = 0
        # Bytes that may still be put back: REREAD_FACTOR per byte read, less those put back.
        # Rescanning after damage is bounded by it, so that damage (headers that each claim a
        # long content, say) can never make the reading quadratic in the size of the file.
        self.credit = 0

    def fill(self, n: int) -> bool:
        while len(self.data) < n:
            chunk = self.more()
            if not chunk:
                return False
            self.data += chunk
            self.credit += REREAD_FACTOR * len(chunk)
        return True

    def peek(self, n: int) -> bytes:
        self.fill(n)
        return bytes(self.data[:n])

    def take(self, n: int) -> bytes:
        self.fill(n)
        out = bytes(self.data[:n])
        del self.data[:n]
        self.offset += len(out)
        return out

    def skip(self, n: int) -> int:
        """Read past n bytes without keeping them; the number actually there."""
        skipped = 0
        while skipped < n and (self.data or self.fill(1)):
            skipped += len(self.take(min(n - skipped, CHUNK)))
        return skipped

    def unread(self, data: bytes) -> None:
        self.data[:0] = data
        self.offset -= len(data)
        self.credit -= len(data)

    def put_back(self, parts: list, tail: int = 1) -> None:
        """Put the bytes of parts (just taken) back to rescan them; when that would spend more
        than the credit, only the last bytes the credit allows (at least tail): the rest is
        read past, as part of the damaged stretch that gets its dead letter."""
        size = sum(len(part) for part in parts)
        keep = size if size <= self.credit else max(tail, self.credit, 0)
        if keep:
            self.unread(b"".join(parts)[-keep:])

    def readline(self, limit: int) -> bytes:
        while self.data.find(b"\n") < 0 and len(self.data) < limit and self.fill(len(self.data) + 1):
            pass
        end = self.data.find(b"\n")
        return self.take(min(end + 1 if end >= 0 else len(self.data), limit))

    def skip_blank(self) -> bool:
        """Past the bytes tolerated between records; False at the end of the input."""
        while self.fill(1):
            blank = 0
            while blank < len(self.data) and self.data[blank] in BLANK:
                blank += 1
            self.take(blank)
            if self.data:
                return True
        return False

    def seek(self, pattern: bytes) -> bool:
        """Forward to the next occurrence of pattern; False (at the end) if there is none."""
        while True:
            found = self.data.find(pattern)
            if found >= 0:
                self.take(found)
                return True
            self.take(max(0, len(self.data) - len(pattern) + 1))
            if not self.fill(len(self.data) + 1):
                self.take(len(self.data))
                return False


_FIELD = re.compile(rb"[^\s:]+:|[ \t]")  # "Name: value", or a folded continuation line


def read_head(buf: Buffer) -> tuple[bytes, dict]:
    """The header block of the record at buf's position, and its fields (lower-case names).
    It ends at the first line that is not a field: that is damage unless the line is blank,
    so a stretch of stray "WARC/1.0" lines is read once, not up to the header limit each."""
    first = buf.readline(64)
    if not re.match(rb"WARC/1\.\d+\r?\n$", first):
        if len(first) < 64 and not first.endswith(b"\n") and first[:7] == b"WARC/1."[:len(first)]:
            raise CutShort("the record's header is cut off", [first], len(first) + 1, len(first) - 1)
        raise BadRecord("no WARC record starts here", [first])
    lines, size, fields = [first], len(first), {}
    while True:
        line = buf.readline(MAX_HEADER_BYTES - size + 1)
        lines.append(line)
        size += len(line)
        if not line.endswith(b"\n") and size <= MAX_HEADER_BYTES:  # the end of the stream
            raise CutShort("the record's header is cut off", lines, size + 1, len(lines[-1]) + 1)
        if not line.endswith(b"\n") or size > MAX_HEADER_BYTES:
            raise BadRecord("the record's header is cut off or too long", lines)
        if not line.strip():
            return b"".join(lines), fields
        if line.startswith(b"WARC/") or not _FIELD.match(line):
            raise BadRecord("the record's header has a line that is not a field", lines)
        name, _, value = line.decode("latin-1").partition(":")
        fields[name.strip().lower()] = value.strip()


def read_record(buf: Buffer, wanted: tuple) -> Piece:
    """The record at buf's position: its header fields, and its content when its WARC-Type
    is wanted. BadRecord, with buf put back one byte after the record's start, when it is
    not a whole record (while it was short enough to put back)."""
    offset = buf.offset
    try:
        head, fields = read_head(buf)
    except CutShort:
        raise
    except BadRecord as err:
        lines = err.args[1]
        # the last line (with the newline before it) may start the next record
        buf.put_back([lines[0][1:], *lines[1:]], len(lines[-1]) + 1 if len(lines) > 1 else len(lines[0]) - 1)
        raise BadRecord(err.args[0]) from None
    length = fields.get("content-length", "")
    if not (length.isdigit() and len(length) < 16):
        buf.put_back([head[1:]])
        raise BadRecord(f"bad Content-Length {length[:20]!r}")
    length = int(length)
    keep = fields.get("warc-type") in wanted
    block = buf.take(min(length, MAX_RECORD_BYTES)) if keep or length <= MAX_RECORD_BYTES else b""
    got = len(block) + buf.skip(length - len(block))
    # The content ends with "\r\n\r\n" (damage after it belongs to the next record), or at least
    # right before the next record or the end (writers differ on the blanks).
    if got < length and length <= MAX_RECORD_BYTES:
        raise CutShort(f"the record ends after {got} of its {length} content bytes", [head, block],
                       len(head) + length, 1)
    after = buf.peek(64)
    if got < length or not (after.startswith(b"\r\n\r\n") or after.lstrip(BLANK)[:5] in (b"", b"WARC/")):
        if length <= MAX_RECORD_BYTES:
            buf.put_back([head[1:], block])
        raise BadRecord(f"the record ends after {got} of its {length} content bytes" if got < length else
                        "the record does not end where its Content-Length says")
    buf.take(4 if after.startswith(b"\r\n\r\n") else 0)
    return Piece(offset, fields=fields, head=head if keep else b"", block=block if keep else b"", length=length)


def records_in(buf: Buffer, wanted: tuple, cut: Optional[list] = None) -> Iterator[Piece]:
    """Every record of an uncompressed WARC stream, and one Piece with an error for each
    stretch where no whole record could be read (the reader moves on to the next line that
    starts with "WARC/1."). With cut (a list), a record cut by the end of the stream ends
    the reading instead, and (its offset, the CutShort) is appended to cut: the next gzip
    member may continue it."""
    while buf.skip_blank():
        offset = buf.offset
        try:
            yield read_record(buf, wanted)
        except CutShort as err:
            if cut is not None:
                cut.append((offset, err))
                return
            parts = err.args[1]
            buf.put_back([parts[0][1:], *parts[1:]], err.args[3])
            yield Piece(offset, error=str(err.args[0]))
        except BadRecord as err:
            yield Piece(offset, error=str(err.args[0]))
            if buf.seek(b"\nWARC/1."):
                buf.take(1)


class Member:
    """The decompressed pieces of the gzip member at raw's position (read()); Damage when
    its data is bad or the file ends inside it. rewind() puts raw back one byte after the
    member's start, to look for the next member inside the damaged one."""

    def __init__(self, raw: Buffer):
        self.raw = raw
        self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.taken: Optional[list] = []  # compressed bytes consumed, while under MAX_REWIND_BYTES
        self.taken_size = 0

    def read(self) -> bytes:
        while not self.inflate.eof:
            if not self.raw.fill(1):
                raise Damage("the file ends inside this gzip member")
            data = bytes(self.raw.data[:MEMBER_PIECE])  # the input stays in raw until consumed
            try:
                out = self.inflate.decompress(data, CHUNK)
            except zlib.error as err:
                raise Damage(f"bad gzip data ({err})") from None
            # at the end, what follows is in unused_data (unconsumed_tail may repeat it)
            left = self.inflate.unused_data if self.inflate.eof else self.inflate.unconsumed_tail
            self._consume(len(data) - len(left))
            if out:
                return out
        return b""

    def _consume(self, n: int) -> None:
        data = self.raw.take(n)
        if self.taken is not None:
            self.taken.append(data)
            self.taken_size += n
            if self.taken_size > MAX_REWIND_BYTES:
                self.taken = None  # too long to keep: rescan from where the damage was found

    def rewind(self) -> None:
        if self.taken is None:
            return  # already past the member's start
        if self.taken_size:
            self.raw.put_back([self.taken[0][1:], *self.taken[1:]], 0)
        else:  # zlib failed on the first piece, before any was consumed
            self.raw.take(1)


def starts_a_warc_member(raw: Buffer) -> bool:
    """Whether the gzip header at raw's position begins a gzip member of WARC data (a chance
    \\x1f\\x8b\\x08 inside compressed data mostly does not inflate)."""
    raw.fill(PROBE_BYTES)
    if len(raw.data) < 10 or raw.data[3] & 0xE0:  # a gzip header's reserved flag bits are zero
        return False
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:  # a small window: this runs for every chance \x1f\x8b\x08 in damaged data
        out = inflate.decompress(bytes(raw.data[:PROBE_BYTES]), 16)
    except zlib.error:
        return False
    # A member that starts a record; or, where members split records anywhere (bgzip), one
    # whose data inflates (records_in then resyncs at its next "WARC/1." line). A chance
    # header that inflates a little is found out by the checksum, as more damage.
    return out[:5] == b"WARC/" or len(out) == 16 or inflate.eof


@dataclass
class Carry:
    """A record cut by the end of its gzip member (bgzip and other writers split records
    across members): its member's offset, its bytes so far, the bytes it needs."""
    offset: int
    parts: list
    size: int
    need: int


def gzip_records(raw: Buffer, wanted: tuple) -> Iterator[Piece]:
    """Every record of a stream of gzip members (one Piece with an error per damaged member
    or stray bytes, then on to the next member that decompresses to a WARC record). A
    member's records come out once its checksum has been verified (unless they are long);
    a record that a member ends inside of is continued by the next member, unless that one
    starts a record of its own."""
    carry: Optional[Carry] = None
    while raw.skip_blank():
        start = raw.offset
        if raw.peek(3) != GZIP_MAGIC:
            yield from left_over(carry, wanted)
            carry = None
            yield Piece(start, error="not a gzip member")
        else:
            member = Member(raw)
            try:
                carry = yield from member_records(member, start, carry, wanted)
                continue
            except Damage as err:
                yield from left_over(carry, wanted)
                carry = None
                yield Piece(start, error=str(err))
                member.rewind()
        while raw.seek(GZIP_MAGIC) and not starts_a_warc_member(raw):
            raw.take(1)
    yield from left_over(carry, wanted)


def member_records(member: Member, start: int, carry: Optional[Carry], wanted: tuple):
    """The records of one gzip member, after the carried record (if this member continues
    it); returns the record this member ends inside of, to carry on, or None."""
    data = member.read()
    if carry and data.startswith(b"WARC/1."):  # a record of its own: the carried one was cut
        yield from left_over(carry, wanted)
        carry.parts = []  # dealt with (the caller's left_over on damage must not repeat it)
        carry = None
    parts, size = (list(carry.parts), carry.size) if carry else ([], 0)  # carry.parts stay as they were, for damage
    parts.append(data)
    size += len(data)
    while carry and size < carry.need and data:  # collect the carried record without parsing it again
        data = member.read()
        parts.append(data)
        size += len(data)
    if carry and size < carry.need:  # this member ended too: carry on
        return Carry(carry.offset, parts, size, carry.need)
    carried = size - len(parts[-1]) if carry else 0  # inner offsets below this are the carried record's
    inner = Buffer(member.read)
    inner.data += b"".join(parts)
    inner.credit += REREAD_FACTOR * size
    cut, held, held_size = [], [], 0
    for piece in records_in(inner, wanted, cut):
        piece.offset = carry.offset if carry and piece.offset < max(carried, 1) else start
        held.append(piece)
        held_size += len(piece.block)
        if held_size > MAX_RECORD_BYTES:
            yield from held
            held, held_size = [], 0
    yield from held
    if not cut:
        return None
    offset, err = cut[0]
    origin = carry.offset if carry and offset < max(carried, 1) else start
    parts = err.args[1]
    return Carry(origin, parts, sum(len(part) for part in parts), err.args[2])


def left_over(carry: Optional[Carry], wanted: tuple) -> Iterator[Piece]:
    """A carried record that no member continued: its dead letter, and any whole record
    found by rescanning its bytes."""
    if carry is None:
        return
    parts = iter(carry.parts)
    for piece in records_in(Buffer(lambda: next(parts, b"")), wanted):
        piece.offset = carry.offset
        yield piece


def archive_pieces(raw: Buffer, wanted: tuple, name: str = "") -> Iterator[Piece]:
    # by the extension too: a .warc.gz whose first member header is damaged is still gzip
    if raw.peek(2) == GZIP_MAGIC[:2] or name.lower().endswith(".gz"):
        return gzip_records(raw, wanted)
    return records_in(raw, wanted)


def is_arc(raw: Buffer) -> bool:
    """Whether the stream is the older ARC format (read by warcio, without resync)."""
    start = raw.peek(1 << 16)
    if start[:2] == GZIP_MAGIC[:2]:
        try:
            start = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(start, 16)
        except zlib.error:
            return False
    return start.startswith(b"filedesc://")


def arc_rows(raw: Buffer, where: str, record_rows) -> Iterator[dict]:
    from warcio.archiveiterator import ArchiveIterator

    class Stream:  # raw's look-ahead first, then the rest of the file
        def read(self, size=CHUNK):
            return raw.take(min(size if size and size > 0 else CHUNK, CHUNK))

    try:
        for number, record in enumerate(ArchiveIterator(Stream(), arc2warc=True)):
            record_id = f"ARC record {number}"  # ARC records have no id (warcio would make a random one)
            try:
                yield from record_rows(record, record_id)
            except Exception as err:  # noqa: BLE001 - one bad page becomes one dead-letter row
                yield {MALFORMED: f"{where} record {record_id}: {type(err).__name__}: {err}"[:300], SOURCE: record_id}
    except Exception as err:  # noqa: BLE001 - a damaged ARC file: keep what was read
        yield {MALFORMED: f"{where}: damaged near byte {raw.offset}: {type(err).__name__}: {err}"[:300]}


def archive_rows(stream, kind: str, record_rows, wanted: tuple, name: str = "") -> Iterator[dict]:
    """Rows from every record of a WARC-format stream (gzipped or not): record_rows(record,
    record_id) yields a record's candidate rows. Each damaged stretch of the file becomes one
    dead-letter row naming the file, the byte offset and the error; so does a record that
    fails to parse, or a wanted record over MAX_RECORD_BYTES."""
    from warcio.recordloader import ArcWarcRecordLoader

    loader = ArcWarcRecordLoader()
    damaged: Optional[Piece] = None  # the damaged stretch being read through
    where = f"{kind} {name}".strip()
    raw = Buffer(lambda: stream.read(CHUNK))
    if is_arc(raw):
        yield from arc_rows(raw, where, record_rows)
        return
    for piece in archive_pieces(raw, wanted, name):
        if piece.error:
            damaged = damaged or piece  # damage right after damage is the same stretch
            continue
        if damaged:
            yield dead_letter(where, damaged, f"; the next whole record is at byte {piece.offset}")
            damaged = None
        if piece.fields.get("warc-type") not in wanted:
            continue
        record_id = piece.fields.get("warc-record-id")
        if piece.length > len(piece.block):  # read past; a dead letter if it may hold candidates
            http_head = piece.block[:1 << 16].split(b"\r\n\r\n")[0]
            if kind == "WAT" or re.search(rb"(?im)^content-type:[^\r\n]*html", http_head):
                yield {MALFORMED: f"{where} record {record_id} at byte {piece.offset}: {piece.length} bytes, "
                                  f"over the limit of {MAX_RECORD_BYTES}", SOURCE: record_id}
            continue
        try:
            record = loader.parse_record_stream(io.BytesIO(piece.head + piece.block), known_format="warc")
            yield from record_rows(record, record_id)
        except Exception as err:  # noqa: BLE001 - one bad page becomes one dead-letter row
            yield {MALFORMED: f"{where} record {record_id}: {type(err).__name__}: {err}"[:300], SOURCE: record_id}
    if damaged:
        yield dead_letter(where, damaged, "; nothing whole after it")


def dead_letter(where: str, piece: Piece, after: str) -> dict:
    return {MALFORMED: f"{where}: damaged at byte {piece.offset}: {piece.error}{after}"[:300],
            SOURCE: f"byte {piece.offset}"}


def warc_rows(stream, name: str = "") -> Iterator[dict]:
    """Candidate rows from a WARC stream of HTML responses."""
    return archive_rows(stream, "WARC", html_response_rows, ("response",), name)


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


def wat_rows(stream, name: str = "") -> Iterator[dict]:
    """Candidate rows from a WAT stream: each metadata record's image links with alt text."""
    return archive_rows(stream, "WAT", wat_metadata_rows, ("metadata",), name)


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
