import os

import pytest

from openwit.pipeline.stages.text import (
    TextConfig, apply_text_rules, detect_language, junk_caption, load_lid_model, word_count,
)
from openwit.schemas.record import Record


@pytest.fixture(scope="module")
def model():
    return load_lid_model()


@pytest.mark.parametrize(
    "caption, language",
    [
        ("a photo of a small dog playing on the beach", "en"),
        ("une photo d'un petit chien qui joue sur la plage", "fr"),
        ("ein Foto von einem kleinen Hund, der am Strand spielt", "de"),
        ("una foto de un perro pequeño jugando en la playa", "es"),
        ("海辺で遊んでいる小さな犬の写真", "ja"),
    ],
)
def test_language_id_with_the_real_model(model, caption, language):
    label, score = detect_language(model, caption)
    assert label == language and 0 < score <= 1.0


def test_multiline_captions_do_not_break_fasttext(model):
    assert detect_language(model, "a dog\non the beach\r\n")[0] == "en"


def record(caption):
    return Record(uid="u", url="http://127.0.0.1/a.jpg", caption=caption, source="f:0")


def test_caption_rules_and_language_filter():
    cfg = TextConfig(min_caption_chars=6, min_caption_words=2, languages=("en",))
    assert apply_text_rules(record("dog"), cfg, ("en", 0.9)).reason == "caption_too_short"
    assert apply_text_rules(record("big  "), cfg, ("en", 0.9)).reason == "caption_too_short"
    kept = apply_text_rules(record("a big dog"), cfg, ("en", 0.91234567))
    assert kept.status == "active" and kept.language == "en" and kept.language_score == 0.9123
    dropped = apply_text_rules(record("un gros chien"), cfg, ("fr", 0.8))
    assert (dropped.reason, dropped.detail, dropped.language) == ("language_not_allowed", "fr", "fr")
    assert apply_text_rules(record("un gros chien"), TextConfig(languages=()), ("fr", 0.8)).status == "active"


def test_defaults_are_datacomp_basic_and_english_as_wit():
    cfg = TextConfig()
    assert apply_text_rules(record("a big dog"), cfg, ("en", 0.9)).status == "active"  # 3 words, 9 chars
    assert apply_text_rules(record("big dogs"), cfg, ("en", 0.9)).reason == "caption_too_short"  # 2 words
    assert apply_text_rules(record("a b c"), cfg, ("en", 0.9)).reason == "caption_too_short"  # 5 chars
    assert apply_text_rules(record("un gros chien"), cfg, ("fr", 0.9)).reason == "language_not_allowed"


def test_min_language_score():
    cfg = TextConfig(languages=(), min_language_score=0.5)
    unsure = apply_text_rules(record("a big dog"), cfg, ("en", 0.31))
    assert (unsure.reason, unsure.language, unsure.language_score) == ("language_uncertain", "en", 0.31)
    assert apply_text_rules(record("a big dog"), cfg, ("en", 0.5)).status == "active"


@pytest.mark.parametrize("caption, words", [
    ("a big dog", 3), ("海辺で遊んでいる小さな犬の写真", 15), ("ภาพสุนัข", 8), ("東京 tower", 3), ("dog", 1),
])
def test_words_of_scripts_without_spaces_are_counted(caption, words):
    assert word_count(caption) == words


def test_cjk_and_thai_captions_pass_the_default_rules():
    for caption in ("海辺の犬の写真", "ภาพสุนัขบนชายหาด", "一只可爱的小狗"):
        assert apply_text_rules(record(caption), TextConfig(languages=()), ("ja", 0.9)).status == "active", caption


@pytest.mark.parametrize("caption, reason", [
    ("IMG_1234.jpg", "caption_filename"), ("DSC01234", "caption_filename"), ("photo 2019-05-01 (2).PNG", "caption_filename"),
    ("Screenshot_20200101-1200", "caption_filename"), ("https://example.com/a.jpg", "caption_url"),
    ("www.example.com", "caption_url"), ("2019 - 05 - 01", "caption_no_letters"), ("12345 678", "caption_no_letters"),
    ("a red car in the snow", None), ("IMG of a dog", None), ("photo of a cat.jpg on a sofa", None),
    ("海辺の犬の写真", None), ("Ελληνικό νησί", None),
])
def test_junk_alt_texts(caption, reason):
    assert junk_caption(caption) == reason
    out = apply_text_rules(record(caption), TextConfig(min_caption_chars=1, min_caption_words=1, languages=()))
    assert out.reason == reason


def test_blocklist_matches_whole_words_only():
    cfg = TextConfig(blocklist=("ass", "stock photo"), languages=())
    assert apply_text_rules(record("a bad ass car"), cfg).reason == "caption_blocklisted"
    assert apply_text_rules(record("Royalty-free STOCK photo of a dog"), cfg).detail == "stock photo"
    assert apply_text_rules(record("a class of students"), cfg).status == "active"
    assert apply_text_rules(record("IMG_1234.jpg"), TextConfig(junk_rules=False, min_caption_words=1, languages=())).status == "active"


def test_language_id_on_real_sentences_in_many_languages(model):
    """UDHR articles 1 and 3 in 17 languages (tests/fixtures/lid_sentences.tsv)."""
    path = os.path.join(os.path.dirname(__file__), "fixtures", "lid_sentences.tsv")
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip() and not line.startswith("#")]
    languages = {language for language, _ in rows}
    assert len(languages) >= 10
    wrong = [(language, detect_language(model, text)[0]) for language, text in rows
             if detect_language(model, text)[0] != language]
    accuracy = 1 - len(wrong) / len(rows)
    assert accuracy >= 0.9, wrong


def test_language_and_score_options_are_checked():
    from openwit.pipeline.config import parse_curate_args

    base = ["--input", "x.jsonl", "--output", "out"]
    assert parse_curate_args(base + ["--languages", "all"])[0].text.languages == ()
    assert parse_curate_args(base + ["--languages", "en,de"])[0].text.languages == ("en", "de")
    assert parse_curate_args(base)[0].text.languages == ("en",)
    for bad in (["--languages", "all,en"], ["--min-language-score", "1.5"]):
        with pytest.raises(SystemExit):
            parse_curate_args(base + bad)
