"""English language ID measured on real short text (issue 20): tests/fixtures/lid_eval.tsv,
Debian desktop-entry strings labelled by their locale key, WordNet glosses and the UDHR
sentences (built by bench/lid_eval/build_eval_set.py; bench/bench_lid.py prints the table).
The thresholds were chosen on the tuning half; these tests measure the held-out half."""
import hashlib
import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "bench"))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "bench", "lid_eval"))

import bench_lid  # noqa: E402
import build_eval_set  # noqa: E402
from openwit.pipeline.stages.text import (  # noqa: E402
    RUNNER_UP_FLOOR, TextConfig, apply_text_rules, is_english, load_lid_model,
)
from openwit.schemas.record import Record  # noqa: E402

FIXTURES = os.path.join(HERE, "fixtures")


@pytest.fixture(scope="module")
def rows():
    return bench_lid.guess_all(bench_lid.load_eval_set(), load_lid_model())


def test_the_shipped_set_is_the_one_its_manifest_describes():
    with open(os.path.join(FIXTURES, "lid_eval.manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    with open(os.path.join(FIXTURES, "lid_eval.tsv"), "rb") as f:
        body = f.read()
    assert hashlib.sha256(body).hexdigest() == manifest["sha256"]
    assert body.count(b"\n") == manifest["rows"] and manifest["languages"] >= 50
    assert sum(manifest["counts"].values()) == manifest["rows"]


def test_halves_come_from_a_keyed_hash_and_are_both_large(rows):
    halves = [r["half"] for r in rows]
    assert 0.4 < halves.count("tuning") / len(halves) < 0.6
    assert [r["half"] for r in bench_lid.load_eval_set()] == halves  # same split on every load


def test_english_rule_meets_the_goal_on_held_out_short_captions(rows):
    short = bench_lid.measure(rows, is_english, "held-out", "2-6 words")
    assert short["english"] >= 250 and short["foreign"] >= 1000
    assert short["recall"] >= 0.95 and short["leak"] <= 0.03, short


def test_todays_rule_misses_the_goal_and_the_new_rule_beats_it(rows):
    before = bench_lid.measure(rows, bench_lid.today, "held-out", "2-6 words")
    after = bench_lid.measure(rows, is_english, "held-out", "2-6 words")
    assert before["leak"] > 0.03  # the loss issue 20 reported is real on this set
    assert after["recall"] > before["recall"] and after["leak"] < before["leak"]


def test_long_captions_are_no_worse_than_today(rows):
    before = bench_lid.measure(rows, bench_lid.today, "held-out", "7+ words")
    after = bench_lid.measure(rows, is_english, "held-out", "7+ words")
    assert after["english"] >= 200 and after["foreign"] >= 200
    assert after["recall"] >= before["recall"] and after["leak"] <= before["leak"]


def test_the_caption_rules_keep_english_and_drop_foreign_short_captions(rows):
    """Through apply_text_rules with the defaults (--languages en, 3+ words): the held-out
    3-6 word captions of the set."""
    chosen = [r for r in rows if r["half"] == "held-out" and 3 <= r["words"] <= 6]
    outcome = {True: [], False: []}
    for i, r in enumerate(chosen):
        rec = Record(uid=str(i), url="http://127.0.0.1/a.jpg", caption=r["text"], source="f:0")
        out = apply_text_rules(rec, TextConfig(), r["guess"])
        outcome[r["language"] == "en"].append(out.status == "active")
    assert len(outcome[True]) >= 200 and len(outcome[False]) >= 500
    assert sum(outcome[True]) / len(outcome[True]) >= 0.95  # English kept
    assert sum(outcome[False]) / len(outcome[False]) <= 0.03  # foreign dropped


def test_a_run_without_english_keeps_what_fasttext_labels_its_language(rows):
    """The English rule only decides English: with --languages X (X not en) a held-out caption
    is kept exactly when fastText's top label is X, and recorded as X."""
    chosen = [r for r in rows if r["half"] == "held-out" and 3 <= r["words"] <= 6]
    for language in ("fr", "de", "pt", "ca"):
        cfg = TextConfig(languages=(language,))
        for i, r in enumerate(chosen):
            rec = Record(uid=str(i), url="http://127.0.0.1/a.jpg", caption=r["text"], source="f:0")
            out = apply_text_rules(rec, cfg, r["guess"])
            assert (out.status == "active") == (r["guess"].label == language), (language, r["text"])
            assert out.language == r["guess"].label


def test_the_runner_up_floor_is_the_one_the_tuning_half_chooses(rows):
    assert bench_lid.choose_runner_up_floor(rows) == RUNNER_UP_FLOOR
    right, named = bench_lid.runner_up_counts(rows, "tuning", RUNNER_UP_FLOOR)
    assert named and 2 * right >= named
    below = max(f for f in bench_lid.RUNNER_UP_FLOORS if f < RUNNER_UP_FLOOR)
    right, named = bench_lid.runner_up_counts(rows, "tuning", below)
    assert 2 * right < named  # a lower floor would name the wrong language more often than not


DESKTOP = """[Desktop Entry]
Name=File Manager
Name[de]=Dateiverwaltung
Name[en_GB]=File Manager
Name[fr]=File Manager
Name[x-test]=xxFile Managerxx
Name[pt_BR]=Gerenciador de arquivos
Comment=Browse the\\sfile system
Comment[sr@latin]=Pregledajte sistem datoteka
"""


def test_desktop_strings_are_labelled_by_their_locale_key():
    got = set(build_eval_set.entry_rows(DESKTOP, "desktop:x"))
    assert got == {("en", "desktop:x", "File Manager"), ("de", "desktop:x", "Dateiverwaltung"),
                   ("pt", "desktop:x", "Gerenciador de arquivos"), ("en", "desktop:x", "Browse the file system"),
                   ("sr", "desktop:x", "Pregledajte sistem datoteka")}
    # Name[fr] equal to the English name was left untranslated; x-test is KDE's pseudo-locale
