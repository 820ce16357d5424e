"""Match captions against the query vocabulary with MetaCLIP's rules, at Aho-Corasick speed.

Semantics (MetaCLIP's substr_matching): case-sensitive; the caption is padded with one
space on each side, the punctuation , . ; : ? ! ` is wrapped in spaces, tabs and newlines
become spaces; an entry matches when " entry " is a substring.

`Matcher` puts every " entry " into one Aho-Corasick automaton (pyahocorasick), which
reports every occurrence, overlapping ones included, in one pass over the caption: the
same ids as MetaCLIP's loop over all entries (tests/test_match.py compares them), at a
cost independent of the vocabulary size. Building the automaton for 450K entries takes
~2 s; it is built once per worker process and cached on disk by the list's sha256.
"""
from __future__ import annotations

import gzip
import os
import pickle
from typing import Optional

import ahocorasick

from openwit.query_lists.build import list_sha256 as vocab_sha256  # one definition for every list
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


class Matcher:
    def __init__(self, automaton: ahocorasick.Automaton):
        self.automaton = automaton

    @classmethod
    def from_entries(cls, entries: list[str]) -> "Matcher":
        automaton = ahocorasick.Automaton()
        for entry_id, entry in enumerate(entries):
            key = f" {entry} "
            if key in automaton:
                automaton.get(key).append(entry_id)  # a repeated entry matches with every id
            else:
                automaton.add_word(key, [entry_id])
        automaton.make_automaton()
        return cls(automaton)

    @classmethod
    def from_vocab(cls, path: str, cache_dir: Optional[str] = None) -> "Matcher":
        """Load the automaton from the disk cache (keyed by the list's sha256) or build it."""
        cache = os.path.join(cache_dir or default_cache_dir(), f"matcher-{vocab_sha256(path)}.pkl")
        try:
            with open(cache, "rb") as f:
                return cls(pickle.load(f))
        except (OSError, EOFError, pickle.UnpicklingError):
            pass
        matcher = cls.from_entries(read_vocab(path))
        _write_cache(cache, matcher.automaton)
        return matcher

    def match(self, caption: str) -> tuple[int, ...]:
        found = {entry_id for _, ids in self.automaton.iter(spaced_caption(caption)) for entry_id in ids}
        return tuple(sorted(found))


def default_cache_dir() -> str:
    return os.environ.get("OPENWIT_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "openwit"))


def _write_cache(path: str, automaton) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = f"{path}.{os.getpid()}.partial"
        with open(temporary, "wb") as f:
            pickle.dump(automaton, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, path)
    except OSError:
        pass  # a read-only home only costs a rebuild next time


def match_record(record: Record, matcher: Matcher) -> Record:
    entry_ids = matcher.match(record.caption)
    if not entry_ids:
        return drop(record, "unmatched")
    return record.update(entry_ids=entry_ids)
