import gzip
import hashlib
import os

import pytest

from openwit.query_lists import build
from openwit.pipeline.stages.match import read_vocab, vocab_sha256


def write_wordnet(directory):
    header = "  1 This software and database is being provided to you, the LICENSEE...\n"
    lines = {
        "noun": ["00001740 03 n 02 entity 0 hot_dog 0 000 | that which exists\n",
                 "00002000 03 n 01 St._Louis 0 000 | a city\n"],
        "verb": ["00001740 29 v 01 breathe 0 000 | draw air\n"],
        "adj": ["00001740 00 a 02 able(a) 0 hot_dog 0 000 | capable\n"],
        "adv": ["00001740 02 r 01 quickly 0 000 | fast\n"],
    }
    for pos, rows in lines.items():
        (directory / f"data.{pos}").write_text(header + "".join(rows))


def test_wordnet_lemmas_in_file_order(tmp_path):
    write_wordnet(tmp_path)
    assert build.wordnet_lemmas(str(tmp_path)) == ["entity", "hot dog", "St. Louis", "breathe", "able", "hot dog", "quickly"]


def test_wikipedia_unigrams_keep_words_counted_often_enough(tmp_path):
    path = tmp_path / "freq.gz"
    with gzip.open(path, "wt") as f:
        f.write("the;500\nr&amp;fc;400\ncat;300\n1692;300\no'neill;150\nx-ray;150\ndog;99\n;1000\na=;200\n")
    assert build.wikipedia_unigrams(str(path), 100) == ["the", "cat", "o'neill", "x-ray"]


def test_pmi_bigrams_exact_threshold_and_junk_filter(tmp_path):
    (tmp_path / "uni.txt").write_text("new\t1000\nyork\t100\nthe\t5000\ncity\t500\nxq\t100\n")
    # N = 6700 unigrams, NB = 10000+300+200+20 bigrams
    (tmp_path / "bi.txt").write_text("new york\t10000\nthe city\t300\nxq york\t200\n0km to\t20\n")
    known = {"new", "york", "the", "city"}
    scored = build.pmi_bigrams(str(tmp_path / "uni.txt"), str(tmp_path / "bi.txt"), known, min_pmi_bits=-10.0)
    assert [b for b, _ in scored] == ["new york", "the city"]  # "the city" is below chance: PMI < 0  # xq is unknown, "0km" not alphabetic
    n, nb = 6700, 10520
    assert scored[0][1] == pytest.approx(__import__("math").log2((10000 / nb) / ((1000 / n) * (100 / n))), abs=1e-4)
    high = build.pmi_bigrams(str(tmp_path / "uni.txt"), str(tmp_path / "bi.txt"), known, min_pmi_bits=scored[0][1] - 1e-3)
    assert [b for b, _ in high] == ["new york"]


def test_assemble_keeps_first_occurrences_and_skips_unmatchable_entries():
    entries, stats = build.assemble([("a", ["dog", "hot dog", "St. Louis", "dog"]), ("b", ["cat", "dog", "why?"])])
    assert entries == ["dog", "hot dog", "cat"]
    assert (stats["a"]["entries"], stats["a"]["skipped"], stats["b"]["entries"], stats["b"]["skipped"]) == (2, 2, 1, 2)
    assert stats["b"]["lowest_ranked"] == ["cat"]


def test_list_file_is_byte_reproducible():
    data = build.list_bytes(["dog", "hot dog"])
    assert build.gzip_bytes(data) == build.gzip_bytes(data)
    assert gzip.decompress(build.gzip_bytes(data)) == b"dog\nhot dog\n"


def test_the_shipped_list_and_its_manifest_agree():
    manifest = build.load_manifest()
    entries = read_vocab(build.shipped_list_path())
    assert len(entries) == manifest["entries"] >= 450_000
    assert vocab_sha256(build.shipped_list_path()) == manifest["sha256"]
    assert sum(s["entries"] for s in manifest["sources"].values()) == len(entries)
    assert len(set(entries)) == len(entries)
    assert manifest["options"] == {"min_unigram_count": 100, "min_pmi_bits": 4.0, "titles": None}


# CI sets OPENWIT_REQUIRE_WORDNET=1 so that a missing WordNet fails there instead of skipping.
@pytest.mark.skipif(not os.path.exists("/usr/share/wordnet/data.noun") and not os.environ.get("OPENWIT_REQUIRE_WORDNET"),
                    reason="WordNet 3.0 is not installed (apt-get install wordnet-base); CI installs it")
def test_vocab_verify_rebuilds_the_shipped_list_from_its_sources():
    assert build.verify() == []


def test_titles_are_appended_after_the_other_sources(tmp_path):
    write_wordnet(tmp_path)
    titles = tmp_path / "titles.txt"
    titles.write_text("Star Wars\nentity\n\n  The   Beatles \n")
    opts = build.BuildOptions(wordnet_dir=str(tmp_path), titles=str(titles))
    if not os.path.exists(build.package_file("pywordfreq", "word_frequencies.gz")):
        pytest.skip("pywordfreq data missing")
    entries, manifest = build.build_vocab(opts)
    assert entries[-2:] == ["Star Wars", "The Beatles"]
    assert manifest["sources"]["titles"]["entries"] == 2
    assert manifest["sources"]["wordnet"]["files"][0]["sha256"] == hashlib.sha256((tmp_path / "data.noun").read_bytes()).hexdigest()
