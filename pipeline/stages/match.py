"""Match captions against the query vocabulary with MetaCLIP's rules.

Semantics (MetaCLIP's substr_matching): case-sensitive; the caption is padded with one
space on each side, the punctuation , . ; : ? ! ` is wrapped in spaces, tabs and newlines
become spaces; an entry matches when " entry " is a substring.

Instead of testing every entry against every caption, `Matcher` looks up every span
between two spaces of the caption in a dict. A span " entry " starts and ends at a space,
so enumerating the spans that cover up to (most spaces in any entry + 1) gaps finds
exactly the substring matches, at a cost independent of the vocabulary size.
"""
from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass

from openwit.schemas.record import Record, drop

_WRAPPED_PUNCTUATION = (",", ".", ";", ":", "?", "!", "`")
_SPACED_CHARS = ("\t", "\n", "\r")


def spaced_caption(caption: str) -> str:
    text = f" {caption} "
    for mark in _WRAPPED_PUNCTUATION:
        text = text.replace(mark, f" {mark} ")
    for char in _SPACED_CHARS:
        text = text.replace(char, " ")
    return text


def read_vocab(path: str) -> list[str]:
    """One entry a line (entry id = 0-based line number); plain text or .gz."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        entries = f.read().split("\n")
    if entries and entries[-1] == "":
        entries.pop()
    for line_number, entry in enumerate(entries):
        if not entry.strip() or entry != entry.strip():
            raise ValueError(f"{path}:{line_number + 1}: entries must be non-empty with no outer spaces")
    return entries


def vocab_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@dataclass
class Matcher:
    ids_by_entry: dict[str, tuple[int, ...]]
    max_spaces: int

    @classmethod
    def from_entries(cls, entries: list[str]) -> "Matcher":
        ids: dict[str, list[int]] = {}
        for entry_id, entry in enumerate(entries):
            ids.setdefault(entry, []).append(entry_id)  # a repeated entry matches with every id
        max_spaces = max((e.count(" ") for e in entries), default=0)
        return cls({e: tuple(v) for e, v in ids.items()}, max_spaces)

    def match(self, caption: str) -> tuple[int, ...]:
        text = spaced_caption(caption)
        spaces = [i for i, char in enumerate(text) if char == " "]
        found: set[int] = set()
        for a, start in enumerate(spaces):
            for end in spaces[a + 1 : a + 2 + self.max_spaces]:
                ids = self.ids_by_entry.get(text[start + 1 : end])
                if ids:
                    found.update(ids)
        return tuple(sorted(found))


def match_record(record: Record, matcher: Matcher) -> Record:
    entry_ids = matcher.match(record.caption)
    if not entry_ids:
        return drop(record, "no_match")
    return record.update(entry_ids=entry_ids)
