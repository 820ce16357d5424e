"""Candidate extraction from a real WARC recorded (warcio's capture_http) from HTML pages
served on 127.0.0.1, and from a WAT generated from the same pages; then curate reads the
WARC directly and the ledger names each candidate's WARC record."""
import io
import json
import uuid

import pyarrow.parquet as pq
import pytest
from scenes import jpeg, scene
from warcio.warcwriter import WARCWriter

from openwit.pipeline.cli import main as cli
from openwit.pipeline.curate.run import curate
from openwit.pipeline.demo.web import Response, serve
from openwit.pipeline.output.ledger import current_state, read_ledger
from openwit.pipeline.config import parse_curate_args
from openwit.pipeline.stages.extract import candidates_from_html, widest_srcset

PAGES = {
    "/news/a.html": ("utf-8", """<html><head><title>a</title></head><body>
        <img src="/img/1.jpg" alt="a red bicycle against a wall">
        <img src="2.jpg" alt="  a   dog on the beach ">
        <img src="/img/3.jpg" alt="">
        <img src="data:image/png;base64,AAAA" alt="an inline pixel">
        <img data-src="/lazy/4.jpg" src="data:image/gif;base64,R0lGOD" alt="a lazy loaded lighthouse">
        <img srcset="/s/5-small.jpg 300w, /s/5-large.jpg 1200w, /s/5-mid.jpg 600w" alt="a mountain lake at dawn">
        </body></html>"""),
    "/blog/b.html": ("iso-8859-1", """<html><head><meta charset="iso-8859-1"><base href="/static/"></head><body>
        <p>Caf\xe9</p><img src="pics/6.jpg" alt="caf\xe9 au lait sur une table">
        <img src="http://127.0.0.1:1/other/7.jpg" alt="an absolute url elsewhere">
        </body></html>"""),
}
EXPECTED = {  # page -> [(url path or absolute url, alt)]
    "/news/a.html": [("/img/1.jpg", "a red bicycle against a wall"), ("/news/2.jpg", "a dog on the beach"),
                     ("/lazy/4.jpg", "a lazy loaded lighthouse"), ("/s/5-large.jpg", "a mountain lake at dawn")],
    "/blog/b.html": [("/static/pics/6.jpg", "café au lait sur une table"),
                     ("http://127.0.0.1:1/other/7.jpg", "an absolute url elsewhere")],
}


def expected_rows(base):
    return sorted((path if "://" in path else base + path, alt, base + page)
                  for page, pairs in EXPECTED.items() for path, alt in pairs)


def page_routes():
    routes = {}
    for path, (charset, html) in PAGES.items():
        routes[path] = Response(200, f"text/html; charset={charset}" if charset != "iso-8859-1" else "text/html",
                                html.encode(charset))
    for i, path in enumerate(["/img/1.jpg", "/news/2.jpg", "/lazy/4.jpg", "/s/5-large.jpg", "/static/pics/6.jpg"]):
        routes[path] = Response(200, "image/jpeg", jpeg(scene(200 + i)))
    return routes


def record_warc(base, path):
    """A real WARC: HTTP traffic to the local pages (http.client), recorded by warcio."""
    import urllib.request

    from warcio.capture_http import capture_http

    with capture_http(str(path)):
        for page in PAGES:
            urllib.request.urlopen(base + page, timeout=5).read()


def write_wat(base, path):
    """A WAT (Common Crawl's JSON metadata records) for the same pages."""
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for page, pairs in EXPECTED.items():
            links = [{"path": "IMG@/src", "url": url if "://" in url else url.replace("/static/", "", 1)
                      if page == "/blog/b.html" else url, "alt": alt} for url, alt in pairs]
            links.append({"path": "A@/href", "url": "/elsewhere.html", "text": "a link"})
            head = {"Base": "/static/"} if page == "/blog/b.html" else {}
            envelope = {"Envelope": {"WARC-Header-Metadata": {"WARC-Target-URI": base + page},
                                     "Payload-Metadata": {"HTTP-Response-Metadata": {
                                         "HTML-Metadata": {"Head": head, "Links": links}}}}}
            writer.write_record(writer.create_warc_record(
                base + page, "metadata", payload=io.BytesIO(json.dumps(envelope).encode()),
                warc_content_type="application/json", warc_headers_dict={"WARC-Record-ID": f"<urn:uuid:{uuid.uuid4()}>"}))


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    root = tmp_path_factory.mktemp("warc")
    with serve(page_routes()) as base:
        record_warc(base, root / "crawl.warc.gz")
        write_wat(base, root / "crawl.wat.gz")
        (root / "vocab.txt").write_text("bicycle\ndog\nlighthouse\nlake\ncafé\nurl\n")
        argv = ["--input", str(root / "crawl.warc.gz"), "--vocab", str(root / "vocab.txt"), "--output",
                str(root / "out"), "--allow-loopback", "--threshold", "1000", "--languages", "all", "--timeout", "5"]
        curate(*parse_curate_args(argv), argv)
        yield {"root": root, "base": base}


@pytest.mark.parametrize("name", ["crawl.warc.gz", "crawl.wat.gz"])
def test_extract_finds_every_img_alt_pair_of_the_pages(archives, name, tmp_path):
    out = tmp_path / "candidates.parquet"
    assert cli(["extract", str(archives["root"] / name), "-o", str(out)]) == 0
    rows = pq.read_table(out).to_pylist()
    assert all(r["error"] is None for r in rows)
    assert sorted((r["url"], r["caption"], r["page_url"]) for r in rows) == expected_rows(archives["base"])
    assert all("<urn:uuid:" in r["source"] for r in rows)  # the WARC record of each candidate


def test_curate_reads_the_warc_and_the_ledger_names_the_record(archives):
    rows = current_state(read_ledger(str(archives["root"] / "out"))).to_pylist()
    assert len(rows) == len(expected_rows(archives["base"]))
    kept = [r for r in rows if r["status"] == "kept"]
    assert {r["caption"] for r in kept} >= {"a red bicycle against a wall", "café au lait sur une table"}
    assert all(r["source"].startswith("crawl.warc.gz:") and "<urn:uuid:" in r["source"] for r in rows)
    elsewhere = next(r for r in rows if "/other/7.jpg" in r["url"])
    assert elsewhere["status"] == "dropped" and elsewhere["stage"] == "download"


def response_spans(path):
    """(start, end, page path) of each response record of a gzipped WARC, by warcio."""
    from warcio.archiveiterator import ArchiveIterator

    spans = []
    with open(path, "rb") as f:
        records = ArchiveIterator(f)
        for record in records:
            if record.rec_type == "response":
                url = record.rec_headers.get_header("WARC-Target-URI")
                record.content_stream().read()
                spans.append([records.get_record_offset(), None, "/" + url.split("/", 3)[3]])
            elif spans and spans[-1][1] is None:
                spans[-1][1] = records.get_record_offset()
    return spans


@pytest.mark.parametrize("garbage", [b"", b"garbage" * 10])
def test_a_warc_cut_inside_a_record_keeps_the_whole_records_and_reports_the_cut_one(archives, tmp_path, garbage):
    """Cut in the middle of the last page's response (nothing appended, or garbage after the
    cut): the other page's candidates all come out, and the cut record is one dead letter."""
    data = (archives["root"] / "crawl.warc.gz").read_bytes()
    start, end, cut_page = response_spans(archives["root"] / "crawl.warc.gz")[-1]
    broken = tmp_path / "broken.warc.gz"
    broken.write_bytes(data[:(start + (end or len(data))) // 2] + garbage)
    out = tmp_path / "c.parquet"
    assert cli(["extract", str(broken), "-o", str(out)]) == 0
    rows = pq.read_table(out).to_pylist()
    base = archives["base"]
    whole = [row for row in expected_rows(base) if row[2] != base + cut_page]
    assert sorted((r["url"], r["caption"], r["page_url"]) for r in rows if not r["error"]) == whole
    [dead] = [r for r in rows if r["error"]]
    assert dead["error"].startswith(f"malformed_row: WARC broken.warc.gz: damaged at byte {start}")


def arc_file(pages):
    """An ARC (version 1) file, the format before WARC: a filedesc record, then one record per page."""
    version = b"1 0 test\nURL IP-address Archive-date Content-type Archive-length\n"
    out = f"filedesc://test.arc 0.0.0.0 20240101000000 text/plain {len(version)}\n".encode() + version + b"\n"
    for page in pages:
        http = b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n" + f'<img src="{page}.jpg" alt="a {page}">'.encode()
        out += f"http://127.0.0.1/{page}.html 127.0.0.1 20240101000000 text/html {len(http)}\n".encode() + http + b"\n"
    return out


def test_an_arc_file_is_still_read(tmp_path):
    """ARC files go to warcio as before (no resync); each candidate names its record by number."""
    from openwit.pipeline.stages.read import ReadConfig, read_candidates

    (tmp_path / "old.arc").write_bytes(arc_file(["cat", "dog"]))
    records = list(read_candidates(str(tmp_path / "old.arc"), "old.arc", ReadConfig()))
    assert [(r.url, r.caption, r.page_url) for r in records] == [
        ("http://127.0.0.1/cat.jpg", "a cat", "http://127.0.0.1/cat.html"),
        ("http://127.0.0.1/dog.jpg", "a dog", "http://127.0.0.1/dog.html")]
    assert [r.source for r in records] == ["old.arc:0 ARC record 1", "old.arc:1 ARC record 2"]  # deterministic


def test_html_details():
    assert widest_srcset("a.jpg 1x, b.jpg 2x") == "b.jpg" and widest_srcset("only.jpg") == "only.jpg"
    pairs = list(candidates_from_html('<img src="x.jpg" alt="A &amp; B">', "http://h/p/q.html"))
    assert pairs == [("http://h/p/x.jpg", "A & B")]
