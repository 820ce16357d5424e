import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openwit.pipeline.stages.read import ReadConfig, detect_format, expand_inputs, make_candidate, read_candidates

ROWS = [
    {"url": "http://127.0.0.1/a.jpg", "caption": "a red circle", "page_url": "http://127.0.0.1/p"},
    {"url": "http://127.0.0.1/a.jpg", "caption": "a red circle", "page_url": "http://127.0.0.1/p"},  # same row twice
    {"url": "", "caption": "no url here"},
    {"url": "https://127.0.0.1/b.png", "caption": "   "},
    {"url": "ftp://127.0.0.1/c.jpg", "caption": "ftp is not http"},
]


def write_all_formats(tmp_path):
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "in.parquet")
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    with gzip.open(tmp_path / "in.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in ROWS))
    for name, sep in (("in.csv", ","), ("in.tsv", "\t")):
        lines = [sep.join(["url", "caption", "page_url"])]
        lines += [sep.join([r["url"], r["caption"], r.get("page_url", "")]) for r in ROWS]
        (tmp_path / name).write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name", ["in.parquet", "in.jsonl", "in.jsonl.gz", "in.csv", "in.tsv"])
def test_every_format_gives_the_same_candidates(tmp_path, name):
    write_all_formats(tmp_path)
    records = list(read_candidates(str(tmp_path / name), name, ReadConfig()))
    assert [r.source for r in records] == [f"{name}:{i}" for i in range(5)]
    assert len({r.uid for r in records}) == 5  # identical rows still get distinct uids
    assert [r.status for r in records] == ["active", "active", "dropped", "dropped", "dropped"]
    assert [r.reason for r in records[2:]] == ["missing_url", "missing_caption", "unsupported_scheme"]
    assert records[0].page_url == "http://127.0.0.1/p"


def test_custom_columns_and_bad_json_lines(tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text('{"URL": "http://127.0.0.1/x.jpg", "TEXT": "a cat"}\n{not json\n[1, 2]\n')
    records = list(read_candidates(str(path), "odd.jsonl", ReadConfig(url_col="URL", caption_col="TEXT")))
    assert records[0].url == "http://127.0.0.1/x.jpg" and records[0].caption == "a cat"
    assert [r.reason for r in records[1:]] == ["malformed_row", "malformed_row"]
    assert "line 2" in records[1].detail  # the ledger says why


def test_expand_inputs_names_sources_relative_to_the_pattern(tmp_path):
    write_all_formats(tmp_path)
    files = expand_inputs([str(tmp_path / "in.*")])
    assert [name for _, name in files] == ["in.csv", "in.jsonl", "in.jsonl.gz", "in.parquet", "in.tsv"]
    with pytest.raises(FileNotFoundError):
        expand_inputs([str(tmp_path / "nothing*.csv")])


def test_unknown_extension_needs_a_format():
    with pytest.raises(ValueError, match="--input-format"):
        detect_format("candidates.xml")


def read(tmp_path, name, content, **cfg):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return list(read_candidates(str(path), name, ReadConfig(**cfg)))


def test_csv_with_a_byte_order_mark(tmp_path):
    records = read(tmp_path, "bom.csv", "\ufeffurl,caption\nhttp://127.0.0.1/a.jpg,a red circle\n")
    assert records[0].status == "active" and records[0].url == "http://127.0.0.1/a.jpg"


def test_tsv_quotes_do_not_swallow_rows(tmp_path):
    content = 'url\tcaption\nhttp://127.0.0.1/1\t"quoted start\nhttp://127.0.0.1/2\tsecond\nhttp://127.0.0.1/3\tthird "x"\n'
    records = read(tmp_path, "q.tsv", content)
    assert [r.caption for r in records] == ['"quoted start', "second", 'third "x"']


def test_csv_with_an_unterminated_quote_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="malformed csv"):
        read(tmp_path, "bad.csv", 'url,caption\nhttp://127.0.0.1/1,"never closed\nhttp://127.0.0.1/2,x\n')


def test_jsonl_lines_end_only_at_newline(tmp_path):
    rows = [{"url": "http://127.0.0.1/1", "caption": "line\u2028separator and \u0085 next-line"},
            {"url": "http://127.0.0.1/2", "caption": "form\x0cfeed"}]
    content = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"
    records = read(tmp_path, "u.jsonl", content)
    assert [r.source for r in records] == ["u.jsonl:0", "u.jsonl:1"]
    assert records[0].caption == rows[0]["caption"]


def test_lone_surrogates_nul_and_odd_types_become_clean_text(tmp_path):
    content = '{"url": "http://127.0.0.1/1", "caption": "a red \\ud800 square\\u0000"}\n'
    [record] = read(tmp_path, "s.jsonl", content)
    assert record.caption == "a red ? square"
    record.caption.encode("utf-8")  # every later stage can encode it
    table = pa.Table.from_pylist([{"url": b"http://127.0.0.1/b", "caption": b"bytes caption"}])
    pq.write_table(table, tmp_path / "odd.parquet")
    [record] = read_candidates(str(tmp_path / "odd.parquet"), "odd.parquet", ReadConfig())
    assert record.url == "http://127.0.0.1/b" and record.caption == "bytes caption"
    for odd in (float("nan"), ["a", "list"], {"a": 1}):
        row = {"url": "http://127.0.0.1/n", "caption": odd}
        assert make_candidate(row, "f", 0, ReadConfig()).reason == "missing_caption"


def test_a_huge_csv_field_is_read(tmp_path):
    caption = "word " * 100_000
    [record] = read(tmp_path, "big.csv", f"url,caption\nhttp://127.0.0.1/1,{caption}\n")
    assert len(record.caption) == len(caption.strip())


@pytest.mark.parametrize("name, content", [
    ("cols.csv", "link,text\nhttp://127.0.0.1/1,a cat\n"),
    ("cols.tsv", "link\ttext\nhttp://127.0.0.1/1\ta cat\n"),
])
def test_a_missing_url_column_is_a_clear_error(tmp_path, name, content):
    with pytest.raises(ValueError, match="--url-col"):
        read(tmp_path, name, content)
    assert read(tmp_path, name, content, url_col="link", caption_col="text")[0].caption == "a cat"
