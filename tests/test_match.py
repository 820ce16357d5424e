import random

import pytest

from openwit.pipeline.stages.match import Matcher, match_record, read_vocab, spaced_caption
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


def test_equals_brute_force_on_random_captions():
    words = ["dog", "hot", "New", "York", "new", "york", "of", "a", "photo", "cat", "St", "Louis"]
    marks = ["", "", "", ",", ".", "!", "?", ";", ":", "`", "\t", "\n", "  "]
    rng = random.Random(7)
    matcher = Matcher.from_entries(ENTRIES)
    for _ in range(3000):
        caption = "".join(rng.choice(words) + rng.choice(marks) + " " * rng.randint(0, 1) for _ in range(rng.randint(1, 8)))
        assert matcher.match(caption) == brute_force(caption, ENTRIES), caption


def test_match_record_drops_captions_without_entries():
    matcher = Matcher.from_entries(ENTRIES)
    record = Record(uid="u", url="http://x/y", caption="a cat sleeping", source="f:0")
    assert match_record(record, matcher).entry_ids == (7,)
    dropped = match_record(record.update(caption="nothing here"), matcher)
    assert (dropped.status, dropped.reason) == ("dropped", "no_match")


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
