"""bench/experiment_worldwide.py: its plumbing (--tiny: 500 pairs in five languages, a few steps,
two seeds), what each arm's curation kept, and its paired statistics recomputed from the per-seed
rows it wrote. Not the result (docs/results.md has that)."""
import json
import math
import os
import sys

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import experiment_worldwide as experiment  # noqa: E402

from openwit.trainer.data import list_shards  # noqa: E402


def read_json(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("worldwide")
    experiment.main(["--tiny", "--out", str(out), "--json", str(out / "copy.json")])
    return out, read_json(out / "copy.json")


def shard_rows(shards: str) -> list[dict]:
    return [row for path in list_shards(shards)
            for row in pq.read_table(path.replace(".tar", ".parquet"), columns=["caption", "language"]).to_pylist()]


def test_the_english_arm_keeps_english_captions_only(report):
    _, r = report
    rows = shard_rows(r["curated"]["english"]["shards"])
    assert rows and {row["language"] for row in rows} == {"en"}
    # by the world's own record of each caption's language (not the LID label): English; the
    # English rule may let through a French "photo d'un ..." whose "photo" is an English entry
    data = r["data"]["english"]
    assert data["samples"] == len(rows) and data["by_language"]["en"] >= 0.95 * len(rows)
    english_names = {c["names"]["en"] for c in r["concepts"]}
    named = sum(any(f" {name} " in f" {row['caption'].replace(',', ' ')} " for name in english_names) for row in rows)
    assert named >= 0.95 * len(rows)


def test_the_worldwide_arm_keeps_captions_in_every_language_with_a_t_each(report):
    _, r = report
    rows = shard_rows(r["curated"]["worldwide"]["shards"])
    assert {row["language"] for row in rows} >= set(experiment.LANGUAGES)
    data = r["data"]["worldwide"]
    assert data["languages_present"] == sorted(experiment.LANGUAGES)
    assert data["samples"] > r["data"]["english"]["samples"]
    assert all(data["by_language"][language] > 0 for language in experiment.LANGUAGES)
    balance = read_json(os.path.join(r["curated"]["worldwide"]["dir"], "stats", "balance.json"))
    thresholds = {language: entry["threshold"] for language, entry in balance["languages"].items()}
    assert set(experiment.LANGUAGES) <= set(thresholds)
    assert thresholds["en"] == r["settings"]["threshold"] == r["curated"]["worldwide"]["thresholds"]["en"]
    assert all(t >= 1 for t in thresholds.values())
    english = read_json(os.path.join(r["curated"]["english"]["dir"], "stats", "balance.json"))
    assert "languages" not in english and english["threshold"] == r["settings"]["threshold"]


def test_names_are_real_list_entries_and_match_only_their_own_concept(report):
    _, r = report
    concepts = r["concepts"]
    for language in experiment.LANGUAGES:
        names = [c["names"][language] for c in concepts]
        assert len(set(names)) == len(names)
    every = [c["names"][language] for c in concepts for language in experiment.LANGUAGES]
    assert len(set(every)) == len(every)  # no name is shared between languages
    # ja names are katakana and none holds another (ja entries match as bare substrings)
    ja = [c["names"]["ja"] for c in concepts]
    assert not any(a != b and a in b for a in ja for b in ja)
    # the run's own check: every caption form matches its concept's name and no other
    assert set(r["template_matches_per_caption"]) == set(experiment.LANGUAGES)
    assert r["template_matches_per_caption"]["ja"] > r["template_matches_per_caption"]["de"]


def test_language_id_mostly_finds_the_intended_language(report):
    _, r = report
    for arm in experiment.ARMS:
        for language in experiment.LANGUAGES:
            assert r["lid"][arm][language] >= 0.9, (arm, language)


def test_every_seed_every_prompt_language_and_the_table(report):
    out, r = report
    k = r["settings"]["concepts"]
    for arm in experiment.ARMS:
        assert [row["seed"] for row in r["runs"][arm]] == r["settings"]["seeds"] == [0, 1]
        for row in r["runs"][arm]:
            for language in experiment.LANGUAGES:
                assert len(row["per_concept"][language]) == k
                assert row[language] == pytest.approx(sum(row["per_concept"][language]) / k)
            assert row["non_en"] == pytest.approx(sum(row[lang] for lang in experiment.LANGUAGES[1:]) / 4)
    assert r["trainer"]["context_length"] == 64 and r["trainer"]["steps"] == r["settings"]["steps"]
    table = (out / "results.md").read_text()
    for metric in experiment.METRICS:
        assert f"| {metric} |" in table
    assert "| english |" in table and "| worldwide |" in table
    assert read_json(out / "results.json") == r


def test_the_paired_statistics_follow_from_the_per_seed_rows(report):
    _, r = report
    base = {row["seed"]: row for row in r["runs"]["english"]}
    for m in experiment.METRICS:
        diffs = [row[m] - base[row["seed"]][m] for row in r["runs"]["worldwide"]]
        test = r["paired"][m]
        assert test["diffs"] == pytest.approx(diffs)
        sd = math.sqrt(sum((d - test["mean"]) ** 2 for d in diffs) / (len(diffs) - 1))
        half = 12.7062 * sd / math.sqrt(2)  # t(0.975, 1 df)
        assert test["t95"] == pytest.approx([test["mean"] - half, test["mean"] + half])
        assert min(diffs) <= test["boot95"][0] <= test["boot95"][1] <= max(diffs)


def test_the_verdicts_read_the_registered_intervals():
    def runs(english_en):
        return {"english": [{"en": english_en}], "worldwide": []}

    def test(non_en, en):
        return {"non_en": {"t95": non_en}, "en": {"t95": en}}

    v = experiment.verdicts(test((0.01, 0.2), (-0.1, -0.02)), runs(0.5))
    assert (v["H1"], v["H2"], v["precondition"]) == ("supports", "worldwide lower", True)
    v = experiment.verdicts(test((-0.2, -0.01), (0.01, 0.03)), runs(0.5))
    assert (v["H1"], v["H2"]) == ("refutes", "worldwide higher")
    v = experiment.verdicts(test((-0.1, 0.1), (-0.1, 0.1)), runs(0.5))
    assert (v["H1"], v["H2"]) == ("inconclusive", "no difference shown")
    v = experiment.verdicts(test((0.01, 0.2), (0.01, 0.03)), runs(0.1))
    assert v["H2"].startswith("undecidable") and v["H1"] == "supports"


def test_prompts_are_written_in_each_language():
    assert experiment.prompts("de")[0] == "ein {} auf weißem Hintergrund"
    assert experiment.prompts("ja")[-1] == "{}のイラスト"
    assert all(len(experiment.prompts(language)) == 5 for language in experiment.LANGUAGES)


def test_the_worldwide_arm_can_train_longer():
    st = experiment.Settings(steps=5, worldwide_steps=9)
    assert experiment.arm_steps(st, "worldwide") == 9 and experiment.arm_steps(st, "english") == 5
    assert experiment.trainer_settings(st, "worldwide").steps == 9 and experiment.trainer_settings(st).steps == 5
    assert experiment.arm_steps(experiment.Settings(steps=5), "worldwide") == 5  # default: equal compute
