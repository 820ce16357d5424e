import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openwit.pipeline.stages.read import ReadConfig, detect_format, expand_inputs, read_candidates

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
    assert [r.reason for r in records[1:]] == ["missing_url", "missing_url"]
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
