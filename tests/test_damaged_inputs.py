"""Damaged inputs never cost the rest of the file: a WARC or WAT with garbled bytes in one
record, cut in half, or uncompressed, keeps every whole record's candidates and reports each
damaged stretch as exactly one malformed_row dead letter (file, byte offset, error)."""
import io
import json
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from openwit.pipeline.cli import main as cli
from openwit.pipeline.output.ledger import current_state, read_ledger
from openwit.pipeline.stages import extract
from openwit.pipeline.stages.read import ReadConfig, read_candidates

PAGES = 300  # HTML responses, each with IMAGES <img alt> candidates
IMAGES = 5


def page_html(page: int, padding=0) -> bytes:
    images = "".join(f'<p>paragraph {page}.{i} with some text</p><img src="/img/{page}/{i}.jpg" '
                     f'alt="picture {i} of page {page}">' for i in range(IMAGES))
    images = "<p>" + "padding " * padding + "</p>" + images
    return f"<html><head><title>page {page}</title></head><body>{images}</body></html>".encode()


def build_warc(gzip=True, big=None, other=b"", pages=PAGES):
    """A WARC shaped like Common Crawl's: warcinfo, then request/response pairs with HTML
    bodies (page `big` with 10,000 more bytes; `other` as an extra image/png response).
    -> (bytes, [(start, end, page)] of each response record)."""
    out = io.BytesIO()
    writer = WARCWriter(out, gzip=gzip)
    writer.write_record(writer.create_warcinfo_record("test.warc.gz", {"software": "openwit-test"}))
    spans = []
    for page in range(pages):
        url = f"http://127.0.0.1/site/{page}.html"
        request = StatusAndHeaders("GET /site/{page}.html HTTP/1.1", [("Host", "127.0.0.1")], is_http_request=True)
        writer.write_record(writer.create_warc_record(url, "request", http_headers=request))
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
        start = out.tell()
        html = page_html(page, 1250 if page == big else 0)
        writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(html), http_headers=headers))
        spans.append((start, out.tell(), page))
    if other:
        headers = StatusAndHeaders("200 OK", [("Content-Type", "image/png")], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record("http://127.0.0.1/big.png", "response",
                                                      payload=io.BytesIO(other), http_headers=headers))
    return out.getvalue(), spans


def build_wat():
    out = io.BytesIO()
    writer = WARCWriter(out, gzip=True)
    spans = []
    for page in range(PAGES):
        url = f"http://127.0.0.1/site/{page}.html"
        links = [{"path": "IMG@/src", "url": f"/img/{page}/{i}.jpg", "alt": f"picture {i} of page {page}"}
                 for i in range(IMAGES)]
        envelope = {"Envelope": {"WARC-Header-Metadata": {"WARC-Target-URI": url}, "Payload-Metadata": {
            "HTTP-Response-Metadata": {"HTML-Metadata": {"Head": {}, "Links": links}}}}}
        start = out.tell()
        writer.write_record(writer.create_warc_record(
            url, "metadata", payload=io.BytesIO(json.dumps(envelope).encode()), warc_content_type="application/json",
            warc_headers_dict={"WARC-Record-ID": f"<urn:uuid:{uuid.UUID(int=page)}>"}))
        spans.append((start, out.tell(), page))
    return out.getvalue(), spans


def read(tmp_path, data, name):
    """The candidates of the archive through the read stage: (pages, dead letters), where
    pages maps each page to its number of candidates."""
    (tmp_path / name).write_bytes(data)
    records = list(read_candidates(str(tmp_path / name), name, ReadConfig()))
    pages = {}
    for record in records:
        if record.status == "active":
            page = int(record.page_url.rsplit("/", 1)[1].split(".")[0])
            pages[page] = pages.get(page, 0) + 1
    dead = [r for r in records if r.status == "dropped"]
    assert all(r.reason == "malformed_row" for r in dead)
    return pages, dead


def garble(data, at, n=64):
    return data[:at] + bytes((b ^ 0xA5) for b in data[at:at + n]) + data[at + n:]


def every_page_but(*lost):
    return {page: IMAGES for page in range(PAGES) if page not in lost}


ARCHIVES = {"crawl.warc.gz": lambda: build_warc(), "crawl.wat.gz": build_wat, "crawl.warc": lambda: build_warc(False)}


@pytest.fixture(params=[extract.CHUNK, 7], ids=["chunk-1MiB", "chunk-7B"])
def chunk(request, monkeypatch):
    """Also read in 7-byte pieces: every boundary case of the look-ahead buffer gets hit."""
    monkeypatch.setattr(extract, "CHUNK", request.param)


@pytest.mark.parametrize("name", sorted(ARCHIVES))
def test_an_undamaged_archive_gives_every_candidate_and_no_dead_letter(tmp_path, name):
    data, _ = ARCHIVES[name]()
    assert read(tmp_path, data, name) == (every_page_but(), [])


@pytest.mark.parametrize("name", ["crawl.warc.gz", "crawl.wat.gz"])
def test_garbled_bytes_in_one_gzip_member_cost_only_that_record(tmp_path, name, chunk):
    data, spans = ARCHIVES[name]()
    start, end, page = spans[PAGES // 2]
    pages, dead = read(tmp_path, garble(data, (start + end) // 2), name)
    assert sum(pages.values()) >= 0.99 * (PAGES - 1) * IMAGES
    assert pages == every_page_but(page)  # in fact all of them: the reader resyncs at the next member
    [letter] = dead
    assert f"{name}: damaged at byte {start}" in letter.detail and "gzip" in letter.detail
    assert letter.source.endswith(f"byte {start}")


def test_damage_across_two_gzip_members_is_one_dead_letter(tmp_path, chunk):
    data, spans = build_warc()
    start, end, page = spans[100]
    pages, dead = read(tmp_path, garble(data, start - 20), "crawl.warc.gz")  # a request's end, the response's start
    assert pages == every_page_but(page)
    assert len(dead) == 1


@pytest.mark.parametrize("name", sorted(ARCHIVES))
def test_an_archive_cut_in_half_keeps_its_whole_records_and_reports_the_partial_one(tmp_path, name, chunk):
    data, spans = ARCHIVES[name]()
    cut = next((start + end) // 2 for start, end, _ in spans if start > len(data) // 2)  # inside a record
    pages, dead = read(tmp_path, data[:cut], name)
    assert pages == {page: IMAGES for start, end, page in spans if end <= cut}
    [letter] = dead
    assert f"{name}: damaged at byte " in letter.detail


def test_an_uncompressed_warc_resyncs_at_the_next_record(tmp_path, chunk):
    data, spans = build_warc(gzip=False)
    start, end, page = spans[PAGES // 2]
    pages, dead = read(tmp_path, garble(data, start), "crawl.warc")  # the "WARC/1.0" line and the headers
    assert pages == every_page_but(page)
    [letter] = dead
    assert f"crawl.warc: damaged at byte {start}: no WARC record starts here" in letter.detail


def test_a_wrong_content_length_is_a_dead_letter_not_a_swallowed_record(tmp_path, chunk):
    data, spans = build_warc(gzip=False)
    start, end, page = spans[10]
    header_end = data.index(b"\r\n\r\n", start)
    at = data.rindex(b"Content-Length: ", start, header_end) + len(b"Content-Length: ")
    length = int(data[at:data.index(b"\r\n", at)])
    longer = data[:at] + str(length + 400).encode() + data[at + len(str(length)):]  # runs into the next records
    pages, dead = read(tmp_path, longer, "crawl.warc")
    assert pages == every_page_but(page)
    [letter] = dead
    assert f"damaged at byte {start}: the record does not end where its Content-Length says" in letter.detail


def test_a_whole_gzip_member_with_a_record_short_of_its_content_length_is_a_dead_letter(tmp_path, chunk):
    """The member decompresses and its checksum holds, but the record in it claims more
    content than it has: a dead letter, not a silently partial page."""
    import gzip

    data, spans = build_warc(pages=3)
    start, end, page = spans[1]
    record = gzip.decompress(data[start:end])
    at = record.index(b"Content-Length: ") + len(b"Content-Length: ")
    length = int(record[at:record.index(b"\r\n", at)])
    short = record[:at] + str(length + 100).encode() + record[at + len(str(length)):]
    pages, dead = read(tmp_path, data[:start] + gzip.compress(short) + data[end:], "crawl.warc.gz")
    assert pages == {0: IMAGES, 2: IMAGES}
    [letter] = dead
    got = length + 4  # its content and the "\\r\\n\\r\\n" after it
    assert f"damaged at byte {start}: the record ends after {got} of its {length + 100} content bytes" in letter.detail


def test_an_html_record_over_the_size_limit_is_a_dead_letter(tmp_path, monkeypatch, chunk):
    data, spans = build_warc(big=7, other=b"\x89PNG" + b"\x00" * 20_000)
    monkeypatch.setattr(extract, "MAX_RECORD_BYTES", 5000)  # read past: memory stays bounded
    pages, dead = read(tmp_path, data, "crawl.warc.gz")
    assert pages == every_page_but(7)
    [letter] = dead  # the long page; the long PNG response cannot hold candidates
    assert "over the limit of 5000" in letter.detail


def test_curate_over_damaged_inputs_gives_one_ledger_row_per_row_and_per_damage(tmp_path):
    """`openwit curate` over a garbled and cut WARC, hostile JSONL lines, a CSV with an
    unclosed quote and a Parquet file with a damaged row group: the run finishes, and the
    ledger has one row per input row, each damage a malformed_row naming where it is. (The
    vocabulary matches no caption, so nothing is downloaded.)"""
    inputs = tmp_path / "in"
    inputs.mkdir()
    data, spans = build_warc(pages=20)
    garbled = spans[10][0] + 200
    cut = (spans[-1][0] + spans[-1][1]) // 2
    (inputs / "crawl.warc.gz").write_bytes(garble(data, garbled)[:cut])
    good = json.dumps({"url": "http://127.0.0.1/j.jpg", "caption": "a jsonl picture of a house"}).encode()
    (inputs / "rows.jsonl").write_bytes(b"\n".join([
        good, b"[" * 200_000 + b"]" * 200_000, b'{"url": "http://127.0.0.1/i.jpg", "caption": ' + b"7" * 5000 + b"}",
        b"[1, 2]", b'{"url": "http://127.0.0.1/\x00.jpg"}', b'{"caption": "caf\xe9"}', good]) + b"\n")
    (inputs / "rows.csv").write_text('url,caption\nhttp://127.0.0.1/c1.jpg,a csv picture of a tree\n'
                                     'http://127.0.0.1/c2.jpg,"an unclosed quote\n'
                                     'http://127.0.0.1/c3.jpg,another tree\n')
    pq.write_table(pa.Table.from_pylist([{"url": f"http://127.0.0.1/p{i}.jpg", "caption": f"parquet picture {i}"}
                                         for i in range(6)]), inputs / "rows.parquet", row_group_size=2,
                   write_page_checksum=True, compression="none")
    parquet = (inputs / "rows.parquet").read_bytes()
    at = parquet.index(b"parquet picture 3")
    (inputs / "rows.parquet").write_bytes(parquet[:at] + b"X" + parquet[at + 1:])
    (tmp_path / "vocab.txt").write_text("zeppelin\n")
    out = tmp_path / "out"
    argv = ["curate", "--input", str(inputs / "*"), "--vocab", str(tmp_path / "vocab.txt"), "--output", str(out),
            "--allow-loopback", "--languages", "all", "--threshold", "100"]
    assert cli(argv) == 0
    rows = current_state(read_ledger(str(out))).to_pylist()
    assert len({r["uid"] for r in rows}) == len(rows)
    dead = sorted(r["detail"].split(":")[0] for r in rows if r["reason"] == "malformed_row")
    assert dead == ["WARC crawl.warc.gz", "WARC crawl.warc.gz", "rows.csv line 3",
                    *[f"rows.jsonl line {n}" for n in range(2, 7)], *["rows.parquet row group 1 (2 rows) cannot be read"] * 2]
    others = [r for r in rows if r["reason"] != "malformed_row"]
    by_file = {}
    for r in others:
        by_file[r["source"].split(":")[0]] = by_file.get(r["source"].split(":")[0], 0) + 1
    whole_pages = [page for start, end, page in spans if end <= cut and page != 10]
    assert by_file == {"crawl.warc.gz": IMAGES * len(whole_pages), "rows.jsonl": 2, "rows.csv": 2, "rows.parquet": 4}
    assert all(r["status"] == "dropped" and r["reason"] != "internal_error" for r in others)


def count_put_back(monkeypatch):
    """Counts the bytes the archive reader puts back to read again."""
    real, put_back = extract.Buffer.unread, [0]

    def unread(self, data):
        put_back[0] += len(data)
        real(self, data)

    monkeypatch.setattr(extract.Buffer, "unread", unread)
    return put_back


STRAY_LINES = b"WARC/1.0\n" * 2000
LONG_CLAIMS = b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: 30000000\r\n\r\n" * 300


@pytest.mark.timeout(60)
@pytest.mark.parametrize("junk", [STRAY_LINES, LONG_CLAIMS], ids=["stray-warc-lines", "long-content-claims"])
@pytest.mark.parametrize("gzip", [False, True], ids=["warc", "warc.gz"])
def test_resyncing_through_damage_reads_each_byte_a_bounded_number_of_times(tmp_path, monkeypatch, junk, gzip):
    """Every line of the junk looks like the start of a record; each such start must not read
    again everything after it (it did: quadratic in the size of the damage)."""
    import gzip as gz

    put_back = count_put_back(monkeypatch)
    data, _ = build_warc(gzip=gzip, pages=20)
    data += gz.compress(junk) if gzip else junk
    pages, dead = read(tmp_path, data, "junk.warc.gz" if gzip else "junk.warc")
    assert pages == {page: IMAGES for page in range(20)}
    assert len(dead) == 1 and "damaged at byte" in dead[0].detail
    assert put_back[0] <= 5 * len(data)  # it was quadratic: 18 MB for 18 kB of stray lines


@pytest.mark.timeout(60)
def test_chance_gzip_magic_bytes_are_probed_with_a_small_window(tmp_path, monkeypatch):
    """After a damaged member every \\x1f\\x8b\\x08 is a candidate for the next member; each
    probe must look at a few kB, not copy and inflate 64 kB (quadratic in the damage)."""
    import zlib

    real, probed = zlib.decompressobj, []

    class Counting:
        def __init__(self, *args):
            self.inflate = real(*args)

        def decompress(self, data, max_length=0):
            if max_length == 16:  # a probe for "WARC/"
                probed.append(len(data))
            return self.inflate.decompress(data, max_length)

        def __getattr__(self, name):
            return getattr(self.inflate, name)

    monkeypatch.setattr(zlib, "decompressobj", Counting)
    data, _ = build_warc(pages=20)
    candidates = 30000
    pages, dead = read(tmp_path, data + b"\x1f\x8b\x08" * candidates, "magic.warc.gz")
    assert pages == {page: IMAGES for page in range(20)}
    assert len(dead) == 1
    assert len(probed) <= candidates and sum(probed) <= 8192 * candidates  # it was 65,536 per probe


def curate_over(tmp_path, name, data):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "good.csv").write_text("url,caption\nhttp://127.0.0.1/g.jpg,a good row\n")
    (inputs / name).write_bytes(data)
    (tmp_path / "vocab.txt").write_text("zeppelin\n")
    out = tmp_path / "out"
    argv = ["curate", "--input", str(inputs / "*"), "--vocab", str(tmp_path / "vocab.txt"), "--output", str(out),
            "--allow-loopback", "--languages", "all", "--threshold", "100"]
    return cli(argv), out


def test_a_parquet_file_with_a_truncated_footer_is_one_dead_letter_not_a_refused_run(tmp_path):
    table = pa.Table.from_pylist([{"url": f"http://127.0.0.1/{i}.jpg", "caption": f"row {i}"} for i in range(5)])
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    code, out = curate_over(tmp_path, "cut.parquet", buffer.getvalue()[:-30])
    assert code == 0
    rows = current_state(read_ledger(str(out))).to_pylist()
    dead = [r for r in rows if r["source"].startswith("cut.parquet")]
    assert len(dead) == 1 and dead[0]["reason"] == "malformed_row" and "not a readable Parquet" in dead[0]["detail"]
    assert [r["source"] for r in rows if r["source"].startswith("good.csv")] == ["good.csv:0"]


def test_a_csv_header_that_is_not_utf8_is_refused_up_front_with_its_reason(tmp_path, capsys):
    code, out = curate_over(tmp_path, "latin.csv", "url,légende\nhttp://127.0.0.1/l.jpg,été\n".encode("latin-1"))
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert "latin.csv" in err and "not UTF-8" in err and len(err.splitlines()) == 1
    assert not out.exists()  # refused before anything was written


def members_of(data: bytes, size: int) -> bytes:
    """data compressed as a gzip member per `size` bytes (records split anywhere, as bgzip does)."""
    import gzip as gz

    return b"".join(gz.compress(data[at:at + size]) for at in range(0, len(data), size))


@pytest.mark.parametrize("size", [1000, 7, 65536])
def test_records_split_across_gzip_members_are_read_whole(tmp_path, size, chunk):
    data, _ = build_warc(gzip=False, pages=40)
    pages, dead = read(tmp_path, members_of(data, size), "split.warc.gz")
    assert pages == {page: IMAGES for page in range(40)}
    assert dead == []


def test_a_record_cut_at_the_end_of_its_member_is_still_a_dead_letter(tmp_path):
    """A member that ends inside a record, followed by one that starts a record of its own."""
    import gzip as gz

    data, spans = build_warc(gzip=False, pages=20)
    start, end, page = spans[5]
    pieces = [data[:start], data[start:end - 100], data[end:]]
    pages, dead = read(tmp_path, b"".join(gz.compress(p) for p in pieces), "cut.warc.gz")
    assert pages == {p: IMAGES for p in range(20) if p != page}
    [letter] = dead
    assert "damaged at byte" in letter.detail and "content bytes" in letter.detail


def test_a_warc_gz_whose_first_member_header_is_damaged_is_still_read_as_gzip(tmp_path, chunk):
    data, spans = build_warc(pages=20)
    damaged = b"XYZ" + data[3:]  # the first member's magic bytes
    pages, dead = read(tmp_path, damaged, "first.warc.gz")
    assert pages == {page: IMAGES for page in range(20)}  # the warcinfo member held no candidates
    [letter] = dead
    assert "first.warc.gz: damaged at byte 0" in letter.detail


def test_damage_in_the_member_that_continues_a_record_is_one_dead_letter(tmp_path):
    """Records split across members; garbled bytes in the middle of the file cost only the
    records around them (never candidates from unverified data), and reading resyncs."""
    data, spans = build_warc(gzip=False, pages=40)
    split = members_of(data, 1000)
    pages, dead = read(tmp_path, garble(split, len(split) // 2, 16), "split.warc.gz")
    assert len(dead) == 1 and "damaged at byte" in dead[0].detail
    assert 30 <= len(pages) < 40 and all(count == IMAGES for count in pages.values())
