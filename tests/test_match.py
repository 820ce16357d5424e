import random

import pytest

from openwit.pipeline.stages.match import Matcher, match_record, read_vocab, spaced_caption, vocab_sha256
from openwit.query_lists.build import shipped_list_path
from openwit.schemas.record import Record


def brute_force(caption, entries):
    """MetaCLIP's reference loop: every entry tested as a ' entry ' substring."""
    text = spaced_caption(caption)
    return tuple(i for i, e in enumerate(entries) if f" {e} " in text)


ENTRIES = ["dog", "hot dog", "New York", "new york", "of", "a photo of", "St. Louis", "cat", "dog"]


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("A dog.", {"dog"}),
        ("a hot dog, with mustard", {"hot dog", "dog"}),
        ("hot-dog stand", set()),  # hyphens are not wrapped: no word boundary
        ("Dog", set()),  # case-sensitive
        ("skyline of New York!", {"of", "New York"}),
        ("a photo of\ta cat", {"a photo of", "of", "cat"}),
        ("St. Louis arch", set()),  # the caption's '.' is wrapped, the entry's is not: MetaCLIP never matches it
        ("dogs", set()),
    ],
)
def test_metaclip_semantics(caption, expected):
    matcher = Matcher.from_entries(ENTRIES)
    found = {ENTRIES[i] for i in matcher.match(caption)}
    assert found == expected
    assert matcher.match(caption) == brute_force(caption, ENTRIES)


def test_repeated_entries_match_with_every_id():
    assert Matcher.from_entries(ENTRIES).match("my dog") == (0, 8)


TRICKY = ["a", "a b", "b", "a b c", "b c", "b c", "c a", "café", "naïve café", "北京", "北京 大学", "x-ray",
          "o'neill", "St. Louis", "e", "ee", "e e"]


def random_caption(words, rng):
    marks = ["", "", "", ",", ".", "!", "?", ";", ":", "`", "\t", "\n", "\r\n", "  ", "-", "'"]
    return "".join(rng.choice(words) + rng.choice(marks) + " " * rng.randint(0, 1) for _ in range(rng.randint(1, 10)))


def test_equals_the_naive_loop_on_thousands_of_random_captions():
    words = ["dog", "hot", "New", "York", "new", "york", "of", "a", "photo", "cat", "St", "Louis", "b", "c",
             "café", "naïve", "北京", "大学", "x-ray", "o'neill", "e", "ee", "E", ""]
    entries = ENTRIES + TRICKY
    rng = random.Random(7)
    matcher = Matcher.from_entries(entries)
    for _ in range(5000):
        caption = random_caption(words, rng)
        assert matcher.match(caption) == brute_force(caption, entries), caption


def test_equals_the_naive_loop_on_a_slice_of_the_shipped_list():
    entries = read_vocab(shipped_list_path())
    rng = random.Random(11)
    sample = rng.sample(entries, 20_000) + TRICKY
    words = [w for entry in rng.sample(sample, 3000) for w in entry.split(" ")]
    matcher = Matcher.from_entries(sample)
    matched = 0
    for _ in range(2000):
        caption = random_caption(words, rng)
        expected = brute_force(caption, sample)
        assert matcher.match(caption) == expected, caption
        matched += bool(expected)
    assert matched > 1000  # the captions really exercise the automaton


def test_matcher_is_cached_on_disk_by_the_list_sha256(tmp_path):
    vocab = tmp_path / "v.txt"
    vocab.write_text("dog\nhot dog\n")
    first = Matcher.from_vocab(str(vocab), cache_dir=str(tmp_path / "cache"))
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1 and vocab_sha256(str(vocab)) in cached[0].name
    again = Matcher.from_vocab(str(vocab), cache_dir=str(tmp_path / "cache"))
    assert again.match("a hot dog") == first.match("a hot dog") == (0, 1)
    vocab.write_text("cat\n")  # a new list gets a new key, never the stale automaton
    assert Matcher.from_vocab(str(vocab), cache_dir=str(tmp_path / "cache")).match("a hot dog") == ()


def test_match_record_drops_captions_without_entries():
    matcher = Matcher.from_entries(ENTRIES)
    record = Record(uid="u", url="http://x/y", caption="a cat sleeping", source="f:0")
    assert match_record(record, matcher).entry_ids == (7,)
    dropped = match_record(record.update(caption="nothing here"), matcher)
    assert (dropped.status, dropped.reason) == ("dropped", "unmatched")


def test_read_vocab(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("dog\nhot dog\n")
    assert read_vocab(str(path)) == ["dog", "hot dog"]
    path.write_text("dog\n\ncat\n")
    with pytest.raises(ValueError, match="v.txt:2"):
        read_vocab(str(path))
    path.write_text("dog \n")
    with pytest.raises(ValueError):
        read_vocab(str(path))
