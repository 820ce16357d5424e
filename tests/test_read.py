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


def test_an_unterminated_csv_quote_costs_only_its_line(tmp_path):
    """csv would read the rest of the file into the quoted field; the line with the quote is
    one dead letter and the rows after it are read."""
    content = ('url,caption\nhttp://127.0.0.1/1,first\nhttp://127.0.0.1/2,"never closed\n'
               'http://127.0.0.1/3,third\nhttp://127.0.0.1/4,"two\nlines"\nhttp://127.0.0.1/5,fifth\n')
    records = read(tmp_path, "bad.csv", content)
    assert [r.status for r in records] == ["active", "dropped", "active", "active", "active"]
    assert records[1].reason == "malformed_row" and "bad.csv line 3: malformed csv" in records[1].detail
    assert [r.caption for r in records[2:]] == ["third", "two\nlines", "fifth"]  # a quoted newline is fine


def test_a_csv_quote_error_inside_a_line_costs_only_that_row(tmp_path):
    content = 'url,caption\nhttp://127.0.0.1/1,"quoted"then more\nhttp://127.0.0.1/2,second\n'
    records = read(tmp_path, "mid.csv", content)
    assert [(r.status, r.reason) for r in records] == [("dropped", "malformed_row"), ("active", None)]
    assert "line 2" in records[0].detail


@pytest.mark.parametrize("chunk", [1 << 20, 3])
def test_hostile_jsonl_lines_are_one_dead_letter_each(tmp_path, monkeypatch, chunk):
    """Every line that cannot be parsed or validated is one malformed_row naming its line;
    read in 3-byte pieces too (lines across read boundaries)."""
    from openwit.pipeline.stages import read as read_stage

    monkeypatch.setattr(read_stage, "READ_CHUNK", chunk)
    monkeypatch.setattr(read_stage, "MAX_LINE_BYTES", 5000)
    good = json.dumps({"url": "http://127.0.0.1/ok.jpg", "caption": "a good row"}).encode()
    lines = [
        good,
        b"[" * 200_000 + b"]" * 200_000,  # over the line limit (5000 here)
        b"[" * 2000 + b"]" * 2000,  # RecursionError in json
        b'{"url": "http://127.0.0.1/n.jpg", "caption": ' + b"9" * 4400 + b"}",  # ValueError: int digits
        b'"just a string"',
        b'{"url": "http://127.0.0.1/\x00.jpg", "caption": "raw NUL"}',
        b'{"url": "http://127.0.0.1/l.jpg", "caption": "caf\xe9 latin-1"}',
        b'{"url": 5, "caption": {"nested": 1}}',  # wrong types: no usable caption
        b'{"url": "http://127.0.0.1/long.jpg", "caption": "' + b"x" * 6000 + b'"}',
        good,
    ]
    records = read(tmp_path, "hostile.jsonl", b"\n".join(lines) + b"\n")
    assert len(records) == len(lines)
    assert [r.reason for r in records] == [None] + ["malformed_row"] * 6 + ["missing_caption", "malformed_row", None]
    for number, record in enumerate(records, start=1):
        assert record.reason != "malformed_row" or f"hostile.jsonl line {number}" in record.detail
    assert "RecursionError" in records[2].detail and "ValueError" in records[3].detail
    assert "not UTF-8" in records[6].detail and "over the limit" in records[8].detail


def test_bad_lines_of_a_csv_are_dead_letters(tmp_path, monkeypatch):
    from openwit.pipeline.stages import read as read_stage

    monkeypatch.setattr(read_stage, "MAX_LINE_BYTES", 5000)
    content = (b"url,caption\nhttp://127.0.0.1/1,caf\xe9\nhttp://127.0.0.1/2," + b"y" * 6000 +
               b"\nhttp://127.0.0.1/3,\"" + b"z" * 6000 + b"\"\nhttp://127.0.0.1/4,fine\n")
    records = read(tmp_path, "lines.csv", content)
    assert [r.reason for r in records] == ["malformed_row"] * 3 + [None]
    assert ["line 2", "line 3", "line 4"] == [r.detail.split(": ")[0].split(" ", 1)[1] for r in records[:3]]


def test_a_damaged_jsonl_gz_is_a_dead_letter_not_a_failed_run(tmp_path):
    """zlib fails on the garbled bytes; the lines read before them (none here: Beam decompresses
    in large blocks) are kept, and the rest of the file is one dead letter."""
    lines = [json.dumps({"url": f"http://127.0.0.1/{i}.jpg", "caption": f"caption number {i}"}) for i in range(3000)]
    data = bytearray(gzip.compress("\n".join(lines).encode() + b"\n"))
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
    records = read(tmp_path, "damaged.jsonl.gz", bytes(data))
    [dead] = [r for r in records if r.status == "dropped"]
    assert dead is records[-1] and "the compressed file is damaged from here on" in dead.detail
    assert len(records) - 1 < 3000 and all(r.caption == f"caption number {i}" for i, r in enumerate(records[:-1]))


def test_a_row_no_rule_foresaw_is_still_one_ledger_row(tmp_path, monkeypatch):
    from openwit.pipeline.stages import read as read_stage

    text = read_stage._text

    def failing_text(value):  # stands for a failure nobody has thought of yet
        if value == "boom":
            raise ArithmeticError("unforeseen")
        return text(value)

    monkeypatch.setattr(read_stage, "_text", failing_text)
    content = "".join(json.dumps({"url": "http://127.0.0.1/x.jpg", "caption": c}) + "\n" for c in ("ok", "boom", "ok"))
    records = read(tmp_path, "odd.jsonl", content)
    assert [r.reason for r in records] == [None, "malformed_row", None]
    assert records[1].detail == "ArithmeticError: unforeseen" and records[1].source == "odd.jsonl:1"


def write_row_groups(path, groups=3, rows=4):
    table = pa.Table.from_pylist([{"url": f"http://127.0.0.1/{i}.jpg", "caption": f"row {i} of the file"}
                                  for i in range(groups * rows)])
    pq.write_table(table, path, row_group_size=rows, write_page_checksum=True, compression="none")


def test_a_damaged_parquet_row_group_is_one_dead_letter_per_row_and_later_rows_keep_their_numbers(tmp_path):
    path = tmp_path / "groups.parquet"
    write_row_groups(path)
    data = path.read_bytes()
    at = data.index(b"row 5 of the file")  # in the second row group's caption page
    path.write_bytes(data[:at] + b"XXX" + data[at + 3:])
    records = list(read_candidates(str(path), "groups.parquet", ReadConfig()))
    kept = [r.caption for r in records if r.status == "active"]
    assert kept == [f"row {i} of the file" for i in (0, 1, 2, 3, 8, 9, 10, 11)]
    dead = [r for r in records if r.status == "dropped"]
    assert len(dead) == 4 and all(r.reason == "malformed_row" for r in dead)
    assert all("groups.parquet row group 1 (4 rows)" in r.detail for r in dead)
    assert [r.source for r in dead] == [f"groups.parquet:{i}" for i in (4, 5, 6, 7)]
    assert [r.source for r in records] == [f"groups.parquet:{i}" for i in range(12)]  # no row shifted
    assert records[8].caption == "row 8 of the file"


def test_a_file_that_is_not_parquet_is_one_dead_letter(tmp_path):
    [record] = read(tmp_path, "fake.parquet", b"PAR1 this is not parquet at all")
    assert record.reason == "malformed_row" and "not a readable Parquet file" in record.detail


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


def test_credentials_in_a_url_are_dropped_at_read_and_never_recorded():
    row = {"url": "http://user:hunter2@127.0.0.1/x.jpg?a=1", "caption": "a photo",
           "page_url": "https://admin:pw@127.0.0.1/page"}
    record = make_candidate(row, "f", 0, ReadConfig())
    assert (record.reason, record.stage) == ("credentials_in_url", "read")
    assert record.url == "http://127.0.0.1/x.jpg?a=1" and record.page_url == "https://127.0.0.1/page"
    assert "hunter2" not in (record.detail or "")
    # a row dropped for another reason does not carry them either
    record = make_candidate({**row, "caption": ""}, "f", 0, ReadConfig())
    assert record.reason == "missing_caption" and "hunter2" not in record.url
    assert make_candidate({**row, "url": "http://127.0.0.1/x@y.jpg"}, "f", 0, ReadConfig()).status != "dropped"


def count_csv_input(monkeypatch):
    """Counts the characters csv.reader is fed (lines read again included)."""
    import csv

    real, fed = csv.reader, [0]

    class Counted:  # not a generator: one that raises once is finished, a feed goes on
        def __init__(self, lines):
            self.lines = iter(lines)

        def __iter__(self):
            return self

        def __next__(self):
            line = next(self.lines)
            fed[0] += len(line)
            return line

    def reader(lines, **options):
        return real(Counted(lines), **options)

    monkeypatch.setattr(csv, "reader", reader)
    return fed


@pytest.mark.timeout(60)
def test_lines_that_each_open_a_quote_to_the_end_are_read_a_bounded_number_of_times(tmp_path, monkeypatch):
    """Every line starts a record that runs to the end of the file; each is one dead letter,
    and the lines fed to csv stay within a constant factor of the file (it was quadratic)."""
    from openwit.pipeline.stages import read as read_module

    factor, cap = getattr(read_module, "REREAD_FACTOR", 8), getattr(read_module, "MAX_RECORD_LINES", 1000)
    fed = count_csv_input(monkeypatch)
    lines = 5000
    content = "url,caption\n" + 'a","\n' * lines + "http://127.0.0.1/1,last\n"
    records = read(tmp_path, "quotes.csv", content)
    assert fed[0] <= (factor + 1) * len(content) + cap * 6
    assert len(records) >= lines - cap  # nothing swallowed wholesale
    assert all(r.reason == "malformed_row" for r in records[:lines - cap])
    assert records[-1].caption == "last" and records[-1].status == "active"


def test_a_record_over_the_line_cap_costs_only_its_first_line(tmp_path, monkeypatch):
    from openwit.pipeline.stages import read as read_module

    monkeypatch.setattr(read_module, "MAX_RECORD_LINES", 5, raising=False)
    content = 'url,caption\nhttp://127.0.0.1/1,"opens\n' + "".join(f"http://127.0.0.1/{i},row {i}\n" for i in range(2, 12))
    records = read(tmp_path, "cap.csv", content)
    assert records[0].reason == "malformed_row" and "line 2" in records[0].detail
    assert "over 5 lines" in records[0].detail  # not read to the end of the file
    assert [r.caption for r in records[1:]] == [f"row {i}" for i in range(2, 12)]


@pytest.mark.parametrize("ext", ["bz2", "xz"])
def test_a_damaged_bz2_or_xz_file_is_a_dead_letter_not_a_failed_run(tmp_path, ext):
    import bz2
    import lzma

    lines = [json.dumps({"url": f"http://127.0.0.1/{i}.jpg", "caption": f"caption number {i}"}) for i in range(3000)]
    compress = bz2.compress if ext == "bz2" else lzma.compress
    data = bytearray(compress("\n".join(lines).encode() + b"\n"))
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
    name = f"damaged.jsonl.{ext}"
    records = read(tmp_path, name, bytes(data), input_format="jsonl")
    [dead] = [r for r in records if r.status == "dropped"]
    assert dead is records[-1] and "the compressed file is damaged from here on" in dead.detail
    assert all(r.caption == f"caption number {i}" for i, r in enumerate(records[:-1]))
    assert detect_format(name) == "jsonl"


def test_a_csv_header_that_is_not_utf8_names_the_problem(tmp_path):
    from openwit.pipeline.common.errors import UserError

    with pytest.raises(UserError, match="header line cannot be read.*not UTF-8"):
        read(tmp_path, "latin.csv", "url,légende\nhttp://127.0.0.1/a.jpg,été\n".encode("latin-1"))
