"""End-to-end: `openwit curate --worldwide --languages all` on the demo web (FnApiRunner, 127.0.0.1)."""
import json
import os

import pyarrow.parquet as pq
import pytest

from openwit.pipeline.config import parse_curate_args
from openwit.pipeline.curate.run import curate
from openwit.pipeline.demo import web as demo_web
from openwit.pipeline.demo.run import write_web_inputs
from openwit.pipeline.output.ledger import current_state, read_ledger
from openwit.pipeline.stages.match import LANGUAGE_ALIASES, entry_names, read_vocab, vocab_size
from openwit.query_lists.worldwide import normalise_words, read_sections, shipped_worldwide_path


@pytest.fixture(scope="module")
def worldwide_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("worldwide")
    web = demo_web.build_web(n_images=60, seed=3)
    with demo_web.serve(web.routes) as base_url:
        candidates, vocab = write_web_inputs(str(tmp_path / "web"), web, base_url)
        out = str(tmp_path / "out")
        argv = ["--input", candidates, "--vocab", vocab, "--output", out, "--threshold", "100000",
                "--image-size", "48", "--timeout", "5", "--retries", "1", "--allow-loopback",
                "--min-image-size", "32", "--near-dup-distance", "0", "--languages", "all", "--worldwide"]
        cfg, beam_args = parse_curate_args(argv)
        manifest = curate(cfg, beam_args, argv)
    return out, vocab, manifest


def test_worldwide_curate_matches_each_caption_in_its_language(worldwide_run):
    out, vocab, manifest = worldwide_run
    # the worldwide list is recorded beside --vocab, so an audit can name the lists used
    from openwit.query_lists.build import list_sha256
    assert manifest["vocab"]["worldwide"] == {"path": shipped_worldwide_path(),
                                              "sha256": list_sha256(shipped_worldwide_path())}
    english_size = len(read_vocab(vocab))
    names = entry_names(vocab, worldwide=True)
    lists = {code for code, _ in read_sections(shipped_worldwide_path())}
    rows = current_state(read_ledger(out)).to_pylist()
    matched = [r for r in rows if r["stage"] not in ("read", "text", "match")]
    assert matched and any(r["language"] != "en" for r in matched)
    for r in matched:
        prefixes = {names[i].split(":", 1)[0] for i in r["entry_ids"]}
        assert prefixes == {LANGUAGE_ALIASES.get(r["language"], r["language"])}, r
        assert (r["language"] == "en") == all(i < english_size for i in r["entry_ids"])
    for r in rows:
        if r["reason"] == "language_without_vocabulary":
            assert r["language"] != "en" and LANGUAGE_ALIASES.get(r["language"], r["language"]) not in lists
    stats = pq.read_table(os.path.join(out, "stats", "entries.parquet"), columns=["entry"]).column("entry")
    assert len(stats) == vocab_size(vocab, worldwide=True) == len(names)
    # per-language balancing: balance.json (and the manifest) give each matched language its t
    balancing = manifest["balancing"]
    assert balancing["rule"] == "fixed+per_language_tail_share" and balancing["threshold"] == 100000
    seen = {LANGUAGE_ALIASES.get(r["language"], r["language"]) for r in matched}
    assert seen <= set(balancing["languages"]) and "en" in balancing["languages"]
    for language, entry in balancing["languages"].items():
        # t = 100000 puts every English entry in the tail (share 1.0): each language's t then
        # lies above its largest count, so nothing is balanced out anywhere
        assert entry["tail_share"] == 1.0 and entry["entries_over_threshold"] == 0, language
    assert not [r for r in rows if r["reason"] and r["reason"].startswith("balanced_out")]


def test_verify_checks_the_worldwide_lists_and_trace_names_their_entries(worldwide_run, tmp_path):
    import shutil

    from openwit.pipeline.audit.summary import trace_text
    from openwit.pipeline.audit.verify import check_worldwide_list, verify

    out, vocab, manifest = worldwide_run
    assert verify(out) == []
    recorded = manifest["vocab"]["worldwide"]
    copy = str(tmp_path / "worldwide.txt.gz")
    shutil.copyfile(recorded["path"], copy)
    assert list(check_worldwide_list({**recorded, "path": copy})) == []
    import gzip

    with gzip.open(recorded["path"], "rb") as f:
        lines = f.read().splitlines(keepends=True)
    with gzip.open(copy, "wb") as f:
        f.writelines(lines[:-1])  # one entry less
    assert "no longer have the sha256" in next(check_worldwide_list({**recorded, "path": copy}))
    assert "not found" in next(check_worldwide_list({**recorded, "path": str(tmp_path / "gone")}))
    # trace names a non-English candidate's entries as the stats do ("de:hund")
    names = entry_names(vocab, worldwide=True)
    row = next(r for r in current_state(read_ledger(out)).to_pylist()
               if r["entry_ids"] and r["language"] != "en")
    text = trace_text(out, row["uid"])
    assert all(f"{i} {names[i]!r}" in text for i in row["entry_ids"])
    # the lists gone: English entries are still named, worldwide ids are not
    from openwit.pipeline.audit.summary import load_run_vocab

    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "manifest.json").write_text(json.dumps({"vocab": {**manifest["vocab"], "worldwide": {
        "path": str(tmp_path / "gone.txt.gz"), "sha256": recorded["sha256"]}}}))
    assert load_run_vocab(str(moved)) == [f"en:{entry}" for entry in read_vocab(vocab)]


def test_summary_report_and_explorer_show_languages(worldwide_run, tmp_path):
    out, _, manifest = worldwide_run
    balancing = manifest["balancing"]
    rows = current_state(read_ledger(out)).to_pylist()
    # audit summary and the report show the funnel and t per language
    from openwit.pipeline.audit.report import build_report
    from openwit.pipeline.audit.summary import language_funnel, summary_text

    funnel = dict(language_funnel(current_state(read_ledger(out))))
    assert sum(row["candidates"] for row in funnel.values()) == len(rows)
    for language, row in funnel.items():
        mine = [r for r in rows if (r["language"] or "-") == language]
        assert row["kept"] == sum(r["status"] == "kept" for r in mine)
        dropped = [r for r in mine if r["status"] == "dropped"]
        assert row["before_balance"] == sum(r["stage"] in ("read", "text", "match", "url_dedup") for r in dropped)
        assert row["balanced_out"] == sum(r["reason"].startswith("balanced_out") for r in dropped)
        assert sum(row[name] for name in ("before_balance", "balanced_out", "after_balance", "kept")) == len(mine)
    text = summary_text(out)
    assert "per language (t giving each English's tail share 100.0%)" in text
    other = next(language for language in balancing["languages"] if language != "en")
    assert any(line.split()[:2] == [other, str(balancing["languages"][other]["threshold"])] for line in text.splitlines())
    page = build_report(out)
    assert 'id="language-table"' in page and f'data-list="{other}"' in page
    # the explorer's balancing view lists every language's t; a row shows that list's entries
    from openwit.pipeline.audit.explorer import write_explorer
    from test_explorer import Browser
    from test_audit import chromium

    site = str(tmp_path / "site")
    write_explorer(out, site)
    chromium()
    browser = Browser(tmp_path / "profile")
    try:
        browser.open("file://" + os.path.join(site, "index.html") + "#view=balancing")
        # the funnel per language ID, as audit summary counts it
        shown_funnel = browser.evaluate("[...document.querySelectorAll('#language-funnel tr[data-language]')]"
                                        ".map(tr => [...tr.children].map(td => td.textContent))")
        expected = {language: [str(row[name]) for name in ("candidates", "before_balance", "balanced_out",
                                                            "after_balance", "kept")] for language, row in funnel.items()}
        assert {cells[0]: cells[1:] for cells in shown_funnel} == {
            ("other" if language == "-" else language): counts for language, counts in expected.items()}
        shown = browser.evaluate("[...document.querySelectorAll('#language-balancing tr[data-list]')]"
                                 ".map(tr => [tr.dataset.list, Number(tr.children[1].textContent)])")
        assert dict(shown) == {language: e["threshold"] for language, e in balancing["languages"].items()}
        browser.act(f"document.querySelector('#language-balancing tr[data-list=\"{other}\"]').click()")
        names = browser.evaluate("[...document.querySelectorAll('#entries tr.entry td:first-child')].map(td => td.textContent)")
        assert names and all(name.startswith(other + ":") for name in names)
        assert browser.errors == []
    finally:
        browser.close()


def multilingual_web(seed: int = 5):
    """The demo web plus 60 German captions of fresh drawings: 40 name a circle (a German head
    entry, with the function words), 20 one of four rarer shapes (German's tail)."""
    import random

    web = demo_web.build_web(n_images=60, seed=3)
    rng = random.Random(seed)
    rare = ("Stern", "Quadrat", "Dreieck", "Kreuz")
    for i in range(60):
        _, _, _, ctype, body = demo_web._scene_bytes(rng, 100 + i)
        web.routes[f"/de/{i}"] = demo_web.Response(200, ctype, body)
        shape = "Kreis" if i < 40 else rare[i % 4]
        web.rows.append({"url": "{base}" + f"/de/{i}", "caption": f"Ein {shape} auf einem hellen Hintergrund",
                         "page_url": None})
    return web


def test_per_language_balancing_in_a_run_is_deterministic(tmp_path):
    """English at t = 2 (a tail share of 0: every English entry is capped) and German at its
    own t; a rerun on another runner (Beam multi_processing, fetch workers 1) gives the same
    ledger and shards byte for byte."""
    from test_curate_e2e import output_bytes

    web = multilingual_web()
    manifests = []
    with demo_web.serve(web.routes) as base_url:
        candidates, vocab = write_web_inputs(str(tmp_path / "web"), web, base_url)
        base = ["--input", candidates, "--vocab", vocab, "--threshold", "2", "--image-size", "48", "--timeout", "5",
                "--retries", "1", "--allow-loopback", "--min-image-size", "32", "--near-dup-distance", "0",
                "--languages", "all", "--worldwide", "--ledger-parts", "2"]
        for i, extra in enumerate([[], ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2",
                                        "--fetch_workers", "1"]]):
            argv = [*base, "--output", str(tmp_path / f"out{i}"), *extra]
            cfg, beam_args = parse_curate_args(argv)
            manifests.append(curate(cfg, beam_args, argv))
    assert output_bytes(str(tmp_path / "out0")) == output_bytes(str(tmp_path / "out1"))
    languages = manifests[0]["balancing"]["languages"]
    assert {"en", "de"} <= set(languages) and languages["de"]["entries_over_threshold"] > 0, languages
    # a target share of 0 gives German the fewest matches any of its entries has (a rare shape)
    assert languages["en"]["tail_share"] == 0.0 and languages["de"]["threshold"] == 5, languages["de"]
    rows = current_state(read_ledger(str(tmp_path / "out0"))).to_pylist()
    balanced = {r["language"] for r in rows if (r["reason"] or "").startswith("balanced_out")}
    assert {"en", "de"} <= balanced, balanced  # each language capped, at its own t


def test_curate_with_a_users_lists_adds_a_language(tmp_path, capsys):
    """`vocab build --worldwide --extra th=FILE` makes a list with Thai (wordfreq has none);
    `curate --worldwide --worldwide-lists` matches Thai captions with it, entries written as
    people write them (สีดำ, which wordfreq's NFKC splits) included."""
    import random

    from openwit.query_lists.build import main as vocab_main

    (tmp_path / "th.txt").write_text("แมว\nโต๊ะ\nสีดำ\n", encoding="utf-8")
    lists = tmp_path / "lists"
    assert vocab_main(["build", "--worldwide", "--languages", "de", "--extra", f"th={tmp_path / 'th.txt'}",
                       "--output", str(lists)]) == 0
    assert vocab_main(["build", "--worldwide", "--languages", "de", "--extra", f"en={tmp_path / 'th.txt'}",
                       "--output", str(tmp_path / "refused")]) == 2
    assert "no 'en' section" in capsys.readouterr().err
    web = demo_web.build_web(n_images=20, seed=3)
    rng = random.Random(1)
    for i in range(6):
        _, _, _, ctype, body = demo_web._scene_bytes(rng, 200 + i)
        web.routes[f"/th/{i}"] = demo_web.Response(200, ctype, body)
        web.rows.append({"url": "{base}" + f"/th/{i}", "caption": "แมวสีดำนั่งบนโต๊ะในห้องครัว", "page_url": None})
    path = str(lists / "worldwide.txt.gz")
    with demo_web.serve(web.routes) as base_url:
        candidates, vocab = write_web_inputs(str(tmp_path / "web"), web, base_url)
        out = str(tmp_path / "out")
        argv = ["--input", candidates, "--vocab", vocab, "--output", out, "--threshold", "100000",
                "--image-size", "48", "--timeout", "5", "--allow-loopback", "--min-image-size", "32",
                "--near-dup-distance", "0", "--languages", "all", "--worldwide", "--worldwide-lists", path]
        cfg, beam_args = parse_curate_args(argv)
        manifest = curate(cfg, beam_args, argv)
    from openwit.query_lists.build import list_sha256

    assert manifest["vocab"]["worldwide"] == {"path": path, "sha256": list_sha256(path)}
    names = entry_names(vocab, path)
    thai = [r for r in current_state(read_ledger(out)).to_pylist() if "/th/" in r["url"]]
    assert len(thai) == 6 and all(r["status"] == "kept" and r["language"] == "th" for r in thai)
    assert all(sorted(names[i] for i in r["entry_ids"]) == sorted(["th:แมว", "th:โต๊ะ", "th:" + normalise_words("สีดำ", "th")])
               for r in thai), [r["entry_ids"] for r in thai]
    assert manifest["balancing"]["languages"]["th"]["matches_in_pool"] == 18
    # the flag needs --worldwide, and the file must exist
    base = ["--input", candidates, "--vocab", vocab, "--output", str(tmp_path / "o2"), "--languages", "all"]
    with pytest.raises(SystemExit):
        parse_curate_args([*base, "--worldwide-lists", path])
    assert "--worldwide-lists needs --worldwide" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_curate_args([*base, "--worldwide", "--worldwide-lists", str(tmp_path / "none.gz")])
    assert "--worldwide-lists: no such file" in capsys.readouterr().err
    # a damaged or malformed list is refused before the run, with the reader's reason
    (tmp_path / "cut.gz").write_bytes(open(path, "rb").read()[:3000])
    (tmp_path / "crlf.txt").write_bytes(b"th\tabc\r\n")
    (tmp_path / "en.txt").write_bytes(b"en\tdog\n")
    for name, reason in (("cut.gz", "end-of-stream"), ("crlf.txt", "no outer spaces"), ("en.txt", "an 'en' section")):
        with pytest.raises(SystemExit):
            parse_curate_args([*base, "--worldwide", "--worldwide-lists", str(tmp_path / name)])
        err = capsys.readouterr().err
        assert "--worldwide-lists:" in err and reason in err and "Traceback" not in err, err
