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
import re
import threading
from typing import Optional

import ahocorasick

from openwit.query_lists.build import list_sha256 as vocab_sha256  # one definition for every list
from openwit.query_lists.worldwide import check_not_english, normalise_words, read_sections, shipped_worldwide_path
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


def match_record(record: Record, matcher) -> Record:
    """MetaCLIP's match (a Matcher), or with --worldwide (a WorldwideMatcher) the match of the
    caption's language's list; a language without a list is its own drop reason."""
    if isinstance(matcher, WorldwideMatcher):
        entry_ids = matcher.match(record.caption, record.language)
        if entry_ids is None:
            return drop(record, "language_without_vocabulary", str(record.language))
    else:
        entry_ids = matcher.match(record.caption)
    if not entry_ids:
        return drop(record, "unmatched")
    return record.update(entry_ids=entry_ids)


# --- Worldwide matching (--worldwide; docs/vocabulary.md) ---------------------------------
# Entry ids: the English list's ids stay 0..N-1; worldwide.txt.gz's line k gets id N + k, so
# every id names one (language, entry) pair and ids fit the ledger's int32 entry_ids.

# fastText (lid.176) labels whose list is stored under wordfreq's code.
LANGUAGE_ALIASES = {"no": "nb", "tl": "fil", "sr": "sh", "hr": "sh", "bs": "sh"}

# Scripts written without spaces between words: Han (with its extensions), kana, Thai, Lao,
# Tibetan, Myanmar, Khmer. An entry holding one of their characters matches as a bare
# substring; every other entry keeps MetaCLIP's space padding.
_NO_SPACE_SCRIPT = re.compile(
    "[\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]"
)


# Korean puts spaces between words, but particles and endings attach to the word's end
# ("강아지와": the puppy + "and"): a Hangul entry matches at the start of a word, " entry".
_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")


def unspaced(entry: str) -> bool:
    return bool(_NO_SPACE_SCRIPT.search(entry))


def automaton_key(entry: str) -> str:
    """What the automaton looks for: the bare entry for scripts without spaces, " entry" (a
    word's start) for Hangul, else MetaCLIP's " entry "."""
    if unspaced(entry):
        return entry
    return f" {entry}" if _HANGUL.search(entry) else f" {entry} "


def worldwide_caption(caption: str, language: str) -> str:
    """The caption normalised as wordfreq normalised the list's words (query_lists.worldwide
    .normalise_words), then MetaCLIP's spacing. `language` is the list's code (wordfreq's)."""
    return spaced_caption(normalise_words(caption, language))


def language_automaton(entries: list[str], first_id: int) -> ahocorasick.Automaton:
    automaton = ahocorasick.Automaton()
    for offset, entry in enumerate(entries):
        key = automaton_key(entry)
        if key in automaton:
            automaton.get(key).append(first_id + offset)
        else:
            automaton.add_word(key, [first_id + offset])
    automaton.make_automaton()
    return automaton


def list_for(language: Optional[str], lists) -> Optional[str]:
    """Which of `lists` a caption of `language` (a fastText label) is matched with: "en" for
    English (--vocab), a list under the label itself (a user's "hr" list, say), else under
    wordfreq's code for it (LANGUAGE_ALIASES); None: no list."""
    if language == "en":
        return "en"
    if language in lists:
        return language
    code = LANGUAGE_ALIASES.get(language, language)
    return code if code in lists else None


class WorldwideMatcher:
    """The English Matcher for "en" and one automaton per other language, built on the first
    caption of that language (lazy: a worker holds only the automata of languages it has seen).

    `sections`: language -> (first id, its lines "LANG<TAB>entry\n" as UTF-8 bytes: 14 MB for
    all 41 languages, where lists of str would take ~50 MB)."""

    def __init__(self, english: Matcher, english_size: int, sections: dict[str, tuple[int, bytes]]):
        self.english = english
        self.english_size = english_size
        self.sections = sections
        self._automata: dict[str, ahocorasick.Automaton] = {}
        self._building = threading.Lock()

    @classmethod
    def from_vocab(cls, english_path: str, worldwide_path: Optional[str] = None,
                   cache_dir: Optional[str] = None) -> "WorldwideMatcher":
        english_size = len(read_vocab(english_path))  # as Matcher counts them (a lone \r splits too)
        return cls(Matcher.from_vocab(english_path, cache_dir), english_size,
                   read_worldwide(worldwide_path or shipped_worldwide_path(), english_size))

    def list_language(self, language: Optional[str]) -> Optional[str]:
        """The list a caption of `language` (a fastText label) is matched with; None: no list."""
        return list_for(language, self.sections)

    def entries(self, code: str) -> list[str]:
        prefix = f"{code}\t"
        lines = self.sections[code][1].decode("utf-8").split("\n")[:-1]
        for line in lines:
            if not line.startswith(prefix) or line != line.strip() or line == prefix:
                raise ValueError(f"worldwide list: bad line {line!r} in the {code!r} section")
        return [line[len(prefix):] for line in lines]

    def automaton(self, code: str) -> ahocorasick.Automaton:
        found = self._automata.get(code)
        if found is None:
            with self._building:  # Beam runs bundles on several threads: build each list once
                found = self._automata.get(code)
                if found is None:
                    found = language_automaton(self.entries(code), self.sections[code][0])
                    self._automata[code] = found
        return found

    def match(self, caption: str, language: Optional[str]) -> Optional[tuple[int, ...]]:
        """Sorted entry ids of the caption's language's list; None when it has no list."""
        code = self.list_language(language)
        if code is None:
            return None
        if code == "en":
            return self.english.match(caption)
        found = {i for _, ids in self.automaton(code).iter(worldwide_caption(caption, code)) for i in ids}
        return tuple(sorted(found))

    def language_ranges(self) -> dict[str, tuple[int, int]]:
        """language -> [first id, end id): per-language balancing keys (language, entry) by these."""
        ranges = {"en": (0, self.english_size)}
        for code, (first_id, block) in self.sections.items():
            ranges[code] = (first_id, first_id + block.count(b"\n"))
        return ranges


_SECTION_LINE = re.compile(rb"^([^\t\n]+)\t", re.MULTILINE)


def read_worldwide(path: str, first_id: int) -> dict[str, tuple[int, bytes]]:
    """worldwide.txt.gz as language -> (id of its first entry, its lines as bytes)."""
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):
        data += b"\n"
    sections, starts = {}, []
    for found in _SECTION_LINE.finditer(data):
        if not starts or starts[-1][0] != found.group(1):
            starts.append((found.group(1), found.start()))
    for (code, start), (_, end) in zip(starts, starts[1:] + [(None, len(data))]):
        language = code.decode("utf-8")
        check_not_english(language, path)
        if language in sections:
            raise ValueError(f"{path}: the lines of {language!r} are not contiguous")
        block = data[start:end]
        sections[language] = (first_id, block)
        first_id += block.count(b"\n")
    return sections


def worldwide_file(worldwide) -> Optional[str]:
    """The per-language lists meant by `worldwide`: a path, True for the shipped list, or
    None for False / None / "" (English only)."""
    if isinstance(worldwide, str):
        return worldwide or None
    return shipped_worldwide_path() if worldwide else None


def entry_names(vocab_path: str, worldwide=False) -> list[str]:
    """Entry id -> name: the entries themselves, or with --worldwide "lang:entry" for every list
    (`worldwide`: the lists' path, or True for the shipped lists)."""
    english = read_vocab(vocab_path)
    lists = worldwide_file(worldwide)
    if not lists:
        return english
    names = [f"en:{entry}" for entry in english]
    for code, entries in read_sections(lists):
        names += [f"{code}:{entry}" for entry in entries]
    return names


def vocab_size(vocab_path: str, worldwide=False) -> int:
    """Number of entry ids (the balancing counts' length)."""
    return max(end for _, end in language_ranges(vocab_path, worldwide).values())


def language_ranges(vocab_path: str, worldwide=False) -> dict[str, tuple[int, int]]:
    """language -> [first id, end id), as WorldwideMatcher numbers them: English (--vocab)
    first, then each worldwide list in file order. Without --worldwide: English only."""
    end = len(read_vocab(vocab_path))
    ranges = {"en": (0, end)}
    lists = worldwide_file(worldwide)
    for code, entries in read_sections(lists) if lists else ():
        ranges[code] = (end, end + len(entries))
        end += len(entries)
    return ranges
