"""Language-aware matching (--worldwide): the automaton of the caption's language against a
naive loop over that language's list, on real captions in 24 languages
(tests/fixtures/worldwide_captions.tsv, zh and ja among them)."""
import functools
import os
import random
import unicodedata

import pytest

from openwit.pipeline.stages.match import (
    Matcher, WorldwideMatcher, automaton_key, entry_names, match_record, read_vocab, unspaced, vocab_size,
    worldwide_caption,
)
from openwit.query_lists.build import shipped_list_path
from openwit.query_lists.worldwide import read_sections, shipped_worldwide_path
from openwit.schemas.record import Record

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "worldwide_captions.tsv")
# Written independently of match.py's regex: by Unicode character names.
NO_SPACE_NAMES = ("CJK ", "HIRAGANA", "KATAKANA", "THAI", "LAO", "TIBETAN", "MYANMAR", "KHMER")


def captions():
    with open(FIXTURE, encoding="utf-8") as f:
        return [tuple(line.rstrip("\n").split("\t")) for line in f if line.strip() and not line.startswith("#")]


def reference_unspaced(entry):
    return any(unicodedata.name(c, "").startswith(NO_SPACE_NAMES) for c in entry)


def reference_key(entry):
    if reference_unspaced(entry):
        return entry
    return f" {entry}" if any(unicodedata.name(c, "").startswith("HANGUL") for c in entry) else f" {entry} "


@functools.lru_cache(maxsize=None)
def reference_keys(entries):
    return tuple(reference_key(entry) for entry in entries)


def naive(caption, language, matcher):
    """The rule as a loop over every entry of the language's list: a bare substring for entries
    in a script without spaces, a word's start (" entry") for Hangul, MetaCLIP's " entry " for
    the others."""
    code = matcher.list_language(language)
    first_id = matcher.sections[code][0]
    normalised = worldwide_caption(caption, code)
    return tuple(first_id + i for i, key in enumerate(reference_keys(tuple(matcher.entries(code))))
                 if key in normalised)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def matcher(cache_dir):
    return WorldwideMatcher.from_vocab(shipped_list_path(), cache_dir=cache_dir)


@functools.lru_cache(maxsize=1)
def all_names():
    return entry_names(shipped_list_path(), worldwide=True)


def names(matcher, ids):
    return {all_names()[i] for i in ids}


def test_the_fixture_covers_ten_languages_two_without_spaces():
    languages = {language for language, _ in captions()}
    assert len(languages) >= 10 and {"zh", "ja"} <= languages


def test_equals_the_naive_loop_on_captions_in_many_languages(matcher):
    for language, caption in captions():
        found = matcher.match(caption, language)
        assert found == naive(caption, language, matcher), (language, caption)
        assert found, (language, caption)  # every caption really exercises its language's list


def test_the_caption_is_normalised_as_the_words_were(matcher):
    assert {"de:hund", "de:park", "de:ball"} <= names(matcher, matcher.match("Ein Hund im Park mit Ball", "de"))
    simplified = matcher.match("一只猫在沙发上睡觉", "zh")
    assert {"zh:猫", "zh:沙发", "zh:睡觉"} <= names(matcher, simplified)
    assert matcher.match("一隻貓在沙發上睡覺", "zh") == simplified  # traditional characters
    assert "sh:most" in names(matcher, matcher.match("Стари мост у Мостару", "sr"))  # Cyrillic to Latin
    assert {"ja:猫", "ja:ソファ"} <= names(matcher, matcher.match("猫がソファの上で寝ています。", "ja"))
    assert {"ko:해변", "ko:강아지"} <= names(matcher, matcher.match("해변에서 노는 강아지와 아이들", "ko"))
    # words split where wordfreq split them when it counted: an elided article is its own word
    assert {"fr:eau", "fr:mer"} <= names(matcher, matcher.match("L'eau de la mer", "fr"))
    assert "ca:aigua" in names(matcher, matcher.match("l'aigua del mar", "ca"))


def test_fasttext_labels_find_the_lists_stored_under_wordfreq_codes(matcher):
    assert [matcher.list_language(label) for label in ("no", "tl", "sr", "hr", "bs", "de", "en")] == \
        ["nb", "fil", "sh", "sh", "sh", "de", "en"]
    assert matcher.list_language("xx") is None and matcher.list_language(None) is None


def test_english_captions_match_exactly_as_without_worldwide(matcher, cache_dir):
    english = Matcher.from_vocab(shipped_list_path(), cache_dir=cache_dir)  # what curate uses without it
    for caption in ("A dog playing in the park.", "skyline of New York at night", "a hot dog, with mustard"):
        assert matcher.match(caption, "en") == english.match(caption) != ()


def section(language, entries):
    return "".join(f"{language}\t{entry}\n" for entry in entries).encode("utf-8")


def test_no_space_rule_by_script():
    english = Matcher.from_entries(["cat"])
    sections = {"ja": (1, section("ja", ["猫", "phone", "ソファ"])), "th": (4, section("th", ["แมว", "โซฟา", "นอน"]))}
    matcher = WorldwideMatcher(english, 1, sections)
    assert matcher.match("iPhoneと猫", "ja") == (1,)  # a Latin entry keeps its space padding
    assert matcher.match("a phone と猫", "ja") == (1, 2)
    assert matcher.match("ソファの猫", "ja") == (1, 3)
    assert matcher.match("แมวนอนบนโซฟา", "th") == (4, 5, 6)  # Thai: no spaces, bare substrings
    assert matcher.match("a cat", "en") == (0,)


def test_the_rule_agrees_with_unicode_names_on_every_shipped_character():
    # The rule looks at characters one by one, so agreeing on every character is agreeing on every entry.
    chars = {c for _, entries in read_sections(shipped_worldwide_path()) for entry in entries for c in entry}
    assert len(chars) > 5000
    for c in sorted(chars):
        assert (automaton_key(c), unspaced(c)) == (reference_key(c), reference_unspaced(c)), c
    assert (automaton_key("猫"), automaton_key("hund"), automaton_key("강아지")) == ("猫", " hund ", " 강아지")


def random_caption(words, rng, joiner):
    marks = ["", "", ",", ".", "!", "?", "。", "、", "\t", "-", "'"]
    return "".join(rng.choice(words) + rng.choice(marks) + joiner * rng.randint(0, 1) for _ in range(rng.randint(1, 8)))


@pytest.mark.parametrize("language, joiner", [("zh", ""), ("ja", ""), ("ko", " "), ("de", " "), ("ru", " "),
                                               ("ar", " ")])
def test_equals_the_naive_loop_on_random_captions_from_the_list(language, joiner):
    sections = dict(read_sections(shipped_worldwide_path()))
    rng = random.Random(5)
    sample = rng.sample(sections[language], 2000)
    words = [rng.choice(sample) for _ in range(300)] + [w.capitalize() for w in rng.sample(sample, 50)]
    matcher = WorldwideMatcher(Matcher.from_entries(["x"]), 1, {language: (1, section(language, sample))})
    matched = 0
    for _ in range(300):
        caption = random_caption(words, rng, joiner)
        found = matcher.match(caption, language)
        assert found == naive(caption, language, matcher), caption
        matched += bool(found)
    assert matched > 150


def test_ids_are_unique_across_languages_and_named_lang_entry(matcher):
    ranges = sorted(matcher.language_ranges().items(), key=lambda item: item[1])
    assert ranges[0] == ("en", (0, len(read_vocab(shipped_list_path()))))
    assert all(a[1][1] == b[1][0] for a, b in zip(ranges, ranges[1:]))  # contiguous, disjoint
    size = vocab_size(shipped_list_path(), worldwide=True)
    assert ranges[-1][1][1] == size
    named = all_names()
    assert len(named) == size == len(set(named))
    first_de, _ = matcher.language_ranges()["de"]
    assert named[first_de].startswith("de:") and named[0].startswith("en:")
    assert vocab_size(shipped_list_path()) == len(entry_names(shipped_list_path())) == ranges[0][1][1]


def test_match_record_uses_the_records_language(matcher):
    record = Record(uid="u", url="http://x/y", caption="Ein Hund im Park", source="f:0", language="de")
    kept = match_record(record, matcher)
    assert kept.status != "dropped" and kept.entry_ids == matcher.match(record.caption, "de")
    nothing = match_record(record.update(caption="zzzz qqqq"), matcher)
    assert (nothing.status, nothing.reason) == ("dropped", "unmatched")
    for language in ("xx", None):
        dropped = match_record(record.update(language=language), matcher)
        assert (dropped.status, dropped.reason, dropped.detail) == ("dropped", "language_without_vocabulary", str(language))


def test_curate_flag_reaches_the_match_stage(tmp_path):
    from openwit.pipeline.beam.graph import build_match
    from openwit.pipeline.config import CurateConfig
    from openwit.pipeline.stages.text import TextConfig

    cfg = CurateConfig(inputs=("x.jsonl",), output=str(tmp_path / "out"))
    assert cfg.worldwide is False and cfg.worldwide_path is None  # English matching stays the default
    record = Record(uid="u", url="http://x/y", caption="Hund und Katze", source="f:0", language="de")
    english = read_vocab(cfg.vocab)
    by_default = build_match(cfg.vocab, cfg.worldwide_path)(record)
    assert [english[i] for i in by_default.entry_ids] == ["und"]  # the English list only
    with pytest.raises(ValueError, match="--languages"):  # it would only rename the statistics
        CurateConfig(inputs=("x.jsonl",), output=str(tmp_path / "out"), worldwide=True)
    worldwide_cfg = CurateConfig(inputs=("x.jsonl",), output=str(tmp_path / "out"), worldwide=True,
                                 text=TextConfig(languages=("all",)))
    assert worldwide_cfg.worldwide_path == shipped_worldwide_path()  # without --worldwide-lists
    matched = build_match(worldwide_cfg.vocab, worldwide_cfg.worldwide_path)(record)
    assert {"de:hund", "de:und", "de:katze"} == {all_names()[i] for i in matched.entry_ids}


def test_a_users_list_under_an_aliased_label_is_used():
    """fastText's "hr" maps to wordfreq's "sh", but a user's own "hr" list comes first."""
    both = WorldwideMatcher(None, 10, {"hr": (10, b"hr\tpas\n"), "sh": (11, b"sh\tpas\n")})
    assert both.list_language("hr") == "hr" and both.list_language("sr") == "sh"
    only_sh = WorldwideMatcher(None, 10, {"sh": (10, b"sh\tpas\n")})
    assert only_sh.list_language("hr") == "sh"
