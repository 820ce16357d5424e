"""End-to-end: `openwit curate --worldwide --languages all` on the demo web (FnApiRunner, 127.0.0.1)."""
import os

import pyarrow.parquet as pq

from openwit.pipeline.config import parse_curate_args
from openwit.pipeline.curate.run import curate
from openwit.pipeline.demo import web as demo_web
from openwit.pipeline.demo.run import write_web_inputs
from openwit.pipeline.output.ledger import current_state, read_ledger
from openwit.pipeline.stages.match import LANGUAGE_ALIASES, entry_names, read_vocab, vocab_size
from openwit.query_lists.worldwide import read_sections, shipped_worldwide_path


def test_worldwide_curate_matches_each_caption_in_its_language(tmp_path):
    web = demo_web.build_web(n_images=60, seed=3)
    with demo_web.serve(web.routes) as base_url:
        candidates, vocab = write_web_inputs(str(tmp_path / "web"), web, base_url)
        out = str(tmp_path / "out")
        argv = ["--input", candidates, "--vocab", vocab, "--output", out, "--threshold", "100000",
                "--image-size", "48", "--timeout", "5", "--retries", "1", "--allow-loopback",
                "--min-image-size", "32", "--near-dup-distance", "0", "--languages", "all", "--worldwide"]
        cfg, beam_args = parse_curate_args(argv)
        manifest = curate(cfg, beam_args, argv)
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
