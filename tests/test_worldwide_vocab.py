"""The worldwide vocabulary (query_lists/worldwide.py): built reproducibly from wordfreq's data
files, verified against WORLDWIDE_MANIFEST.json."""
import gzip
import hashlib
import json

import msgpack
import pytest

from openwit.query_lists import build, worldwide
from openwit.query_lists.worldwide import WorldwideOptions


def write_cbpack(path, bands):
    """wordfreq's format: a header, then band i = the words of frequency 10^(-i/100)."""
    with gzip.open(path, "wb") as f:
        f.write(msgpack.packb([{"format": "cB", "version": 1}] + bands))


def test_is_entry():
    for word in ("hund", "grosse", "o'neill", "x-ray", "猫", "सुंदर", "강아지", "ʖ", "می\u200cخواهم"):
        assert worldwide.is_entry(word), word
    for word in ("", "0000", "mp0", "st.", "a,b", "-ish", "don'", "͜", "two words", "l'", "😀"):
        assert not worldwide.is_entry(word), word


def test_whole_bands_down_to_the_zipf_cut_and_the_cap(tmp_path):
    path = str(tmp_path / "large_xx.msgpack.gz")
    bands = [[] for _ in range(700)]
    bands[200] = ["der", "die"]  # Zipf 7.0
    bands[400] = ["haus", "0000", "hund"]  # Zipf 5.0
    bands[550] = ["baum", "katze", "maus"]  # Zipf 3.5
    bands[620] = ["selten"]  # Zipf 2.8: below the cut
    write_cbpack(path, bands)
    found = worldwide.frequency_entries(path, WorldwideOptions(min_zipf=3.0, max_entries=100))
    assert found["entries"] == ["der", "die", "haus", "hund", "baum", "katze", "maus"]
    assert (found["zipf_cut"], found["skipped"]) == (3.5, 1)
    assert found["text_share"] == round(2e-2 + 2e-4 + 3 * 10 ** -5.5, 4)
    # a cap inside a band stops before the whole band: the threshold stays a Zipf value
    capped = worldwide.frequency_entries(path, WorldwideOptions(min_zipf=3.0, max_entries=5))
    assert capped["entries"] == ["der", "die", "haus", "hund"] and capped["zipf_cut"] == 5.0


def test_the_shipped_list_and_its_manifest_agree():
    manifest = worldwide.load_manifest()
    sections = worldwide.read_sections(worldwide.shipped_worldwide_path())
    assert [code for code, _ in sections] == sorted(manifest["per_language"]) and len(sections) >= 40
    assert "en" not in manifest["per_language"]
    assert sum(len(entries) for _, entries in sections) == manifest["entries"]
    assert build.list_sha256(worldwide.shipped_worldwide_path()) == manifest["sha256"]
    for code, entries in sections:
        record = manifest["per_language"][code]
        assert len(entries) == record["entries"] <= manifest["options"]["max_entries"]
        assert len(set(entries)) == len(entries) and entries[-20:] == record["lowest_ranked"]
        assert record["zipf_cut"] >= manifest["options"]["min_zipf"]
        assert hashlib.sha256(worldwide.section_bytes(code, entries)).hexdigest() == record["sha256"]
    assert "CC-BY-SA" in manifest["licence"] and manifest["source"]["version"] == "3.1.1"


def test_quick_verify_of_a_few_languages():
    assert worldwide.verify(languages=("de", "ja", "zh")) == []
    assert build.main(["verify", "--worldwide", "--languages", "ko,sh"]) == 0


def test_vocab_verify_worldwide_rebuilds_the_shipped_list():
    assert build.main(["verify", "--worldwide"]) == 0


def test_verify_reports_a_changed_list_and_a_changed_extra_file(tmp_path):
    extra = tmp_path / "th.txt"
    extra.write_text("แมว\nสุนัข\nแมว\n\nโซฟา\n", encoding="utf-8")
    out = tmp_path / "list"
    assert build.main(["build", "--worldwide", "--languages", "da", "--extra", f"th={extra}",
                       "--output", str(out)]) == 0
    assert worldwide.read_sections(str(out / worldwide.LIST_NAME))[1] == ("th", ["แมว", "สุนัข", "โซฟา"])
    manifest = json.loads((out / worldwide.MANIFEST_NAME).read_text())
    assert manifest["per_language"]["th"]["sources"][0]["source"] == "user file"
    assert worldwide.verify(str(out)) == []
    extra.write_text("แมว\n", encoding="utf-8")
    problems = worldwide.verify(str(out))
    assert any("th: source" in p for p in problems) and any("th: rebuilt section" in p for p in problems)
    with gzip.open(out / worldwide.LIST_NAME, "wb") as f:
        f.write("da\tog\n".encode())
    assert any("shipped list's sha256" in p for p in worldwide.verify(str(out), ("da",)))


def test_extra_needs_lang_equals_file():
    with pytest.raises(ValueError, match="LANG=FILE"):
        worldwide.parse_extra("th.txt")


def test_extra_codes_are_language_labels_and_normalising_is_reported(tmp_path):
    for bad in ("TH=x.txt", "t\th=x.txt", "thai language=x.txt"):
        with pytest.raises(ValueError, match="lower-case language code"):
            worldwide.parse_extra(bad)
    assert worldwide.parse_extra("pt-br=x.txt") == ("pt-br", "x.txt")
    path = tmp_path / "extra.txt"
    path.write_text("C++\nRock,  Paper\nHund\n\n", encoding="utf-8")
    entries, changed = worldwide.read_extra(str(path), "de")
    assert entries == ["c", "rock paper", "hund"]
    assert changed == [["C++", "c"], ["Rock, Paper", "rock paper"]]  # case and spacing alone are no change


def test_a_list_with_windows_line_ends_is_refused_when_read(tmp_path):
    path = tmp_path / "lists.txt"
    path.write_bytes(b"th\tabc\r\nth\tdef\r\n")
    with pytest.raises(ValueError, match="no outer spaces"):
        worldwide.read_sections(str(path))
