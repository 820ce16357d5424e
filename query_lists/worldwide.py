"""The worldwide vocabulary: one entry list per language, built reproducibly from wordfreq.

`openwit vocab build --worldwide` writes `worldwide.txt.gz` (one "LANG<TAB>entry" a line,
grouped by language in code order, each language's entries most frequent first) and
`WORLDWIDE_MANIFEST.json` (per language: the wordfreq data file and its sha256, the Zipf
cut, counts, the lowest-ranked entries, the share of running text the entries cover, and the
sha256 of the language's section). `openwit vocab verify --worldwide` rebuilds and compares.

Source: the word frequencies that the `wordfreq` wheel bundles (its "best" list per language:
"large" where it exists, else "small"). Per language: whole frequency bands (wordfreq rounds
frequencies to centibels) from the most frequent down, while the Zipf frequency is >= the cut
and the language has at most `max_entries` entries; so each language's effective threshold is
a Zipf value, recorded in the manifest. Words are kept as wordfreq stores them: already
normalised by wordfreq's own rules (casefolded, NFC/NFKC, abjad marks removed, Serbian in
Latin script, Chinese simplified); the matcher normalises captions the same way
(pipeline/stages/match.py). English is not here: it is the English list (entries.txt.gz).

wordfreq's code is Apache-2.0; its data is CC-BY-SA 4.0 (Robyn Speer et al., built from
Wikipedia, subtitles, news, books, web text, Twitter and Reddit): the manifest carries the
attribution, and so must lists derived from it.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Optional

from openwit.query_lists import build
from openwit.query_lists.build import HERE, list_sha256, sha256_file, write_gzipped, write_manifest

LIST_NAME = "worldwide.txt.gz"
MANIFEST_NAME = "WORLDWIDE_MANIFEST.json"
SOURCE = "wordfreq"
# English is matched with the English list (entries.txt.gz), MetaCLIP 2's English metadata.
SKIPPED_LANGUAGES = ("en",)
ATTRIBUTION = ("Word frequencies from wordfreq (Robyn Speer et al., https://github.com/rspeer/wordfreq), "
               "data licensed CC-BY-SA 4.0; code Apache-2.0. This list is derived from that data and is "
               "shared under CC-BY-SA 4.0.")
# Inside a word: apostrophe, hyphen, and the zero-width (non-)joiner that Persian, Urdu and
# Indic spellings need ("می‌خواهم").
_INNER = "'-\u200c\u200d"
_SPACED = (",", ".", ";", ":", "?", "!", "`")  # MetaCLIP's matcher wraps these in spaces: never in an entry


@dataclass(frozen=True)
class WorldwideOptions:
    min_zipf: float = 3.0  # once per million words: the floor of wordfreq's "small" lists, so one rule for all
    max_entries: int = 20_000  # per language, cut at a whole frequency band
    languages: Optional[tuple[str, ...]] = None  # None: every wordfreq language but English
    extras: tuple[tuple[str, str], ...] = field(default=())  # (language, file): user entries, one a line


def is_entry(word: str) -> bool:
    """Letters and marks only (marks: Indic vowel signs), starting with a letter, with inner
    ' - or zero-width (non-)joiners; no digits (wordfreq writes multi-digit numbers as zeros), no spaces, none of
    MetaCLIP's wrapped punctuation. Drops emoticon debris such as the combining mark of ( ͡° ͜ʖ ͡°)."""
    if not word or unicodedata.category(word[0])[0] != "L" or word[-1] in _INNER:
        return False
    if any(mark in word for mark in _SPACED):
        return False
    return all(unicodedata.category(c)[0] in "LM" or c in _INNER for c in word)


def zipf_of_band(band: int) -> float:
    """wordfreq's band i holds the words of frequency 10^(-i/100); Zipf = log10(per billion words)."""
    return round(9 - band / 100, 2)


def wordfreq_languages() -> list[str]:
    import wordfreq

    return sorted(lang for lang in wordfreq.available_languages("best") if lang not in SKIPPED_LANGUAGES)


def wordfreq_file(language: str) -> str:
    import wordfreq

    path = wordfreq.available_languages("best").get(language)
    if not path or not os.path.exists(path):
        raise FileNotFoundError(f"wordfreq has no word list for {language!r}")
    return path


def frequency_entries(path: str, opts: WorldwideOptions) -> dict:
    """Whole bands, most frequent first, while Zipf >= min_zipf and at most max_entries."""
    import wordfreq

    entries, skipped, zipf_cut, share = [], 0, None, 0.0
    for band, words in enumerate(wordfreq.read_cBpack(path)):
        if not words:
            continue
        if zipf_of_band(band) < opts.min_zipf:
            break
        kept = [w for w in words if is_entry(w)]
        if len(entries) + len(kept) > opts.max_entries:
            break
        entries += kept
        skipped += len(words) - len(kept)
        zipf_cut = zipf_of_band(band)
        share += len(kept) * 10 ** (-band / 100)
    return {"entries": entries, "skipped": skipped, "zipf_cut": zipf_cut, "text_share": round(share, 4)}


def read_extra(path: str, language: str) -> tuple[list[str], list[list[str]]]:
    """A user file: one entry a line, normalised as captions of `language` are before
    matching (normalise_words), so that an entry written as people write it still matches.
    -> (entries, [written, normalised] for each line that normalising changed beyond case and
    spacing: "C++" becomes "c", which the manifest shows rather than hides)."""
    entries, changed = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            written = " ".join(line.split())
            entry = normalise_words(written, language)
            if entry != written.casefold():
                changed.append([written, entry])
            if entry:
                entries.append(entry)
    return entries, changed


def normalise_words(text: str, language: str) -> str:
    """Text as wordfreq normalised its corpora for `language` (casefold, NFC/NFKC, abjad marks,
    Serbian to Latin, Turkish dotted i; Chinese simplified), split at wordfreq's word
    boundaries ("l'eau" is "l" + "eau"; Han and Thai runs stay glued), joined by spaces."""
    from wordfreq.preprocess import preprocess_text
    from wordfreq.tokens import simple_tokenize

    text = preprocess_text(text, language)
    if language == "zh":
        text = text.translate(_simplified_chinese())
    return " ".join(simple_tokenize(text))


@functools.lru_cache(maxsize=1)
def _simplified_chinese() -> dict:
    # wordfreq's character map; its own simplify_chinese needs jieba, which is not a dependency.
    import msgpack
    from wordfreq.util import data_path

    with gzip.open(data_path("_chinese_mapping.msgpack.gz")) as f:
        return msgpack.load(f, raw=False, strict_map_key=False)


def section_bytes(language: str, entries: list[str]) -> bytes:
    return b"".join(f"{language}\t{entry}\n".encode("utf-8") for entry in entries)


def _dedupe(entries: list[str], seen: set[str]) -> list[str]:
    kept = []
    for entry in entries:
        if entry not in seen and not any(mark in entry for mark in _SPACED) and "\t" not in entry:
            seen.add(entry)
            kept.append(entry)
    return kept


def build_language(language: str, opts: WorldwideOptions, extra: Optional[str] = None) -> tuple[list[str], dict]:
    """One language's entries (wordfreq first, then the user file) and its manifest record."""
    seen: set[str] = set()
    entries, record = [], {"sources": []}
    if language in wordfreq_languages():
        path = wordfreq_file(language)
        found = frequency_entries(path, opts)
        entries = _dedupe(found["entries"], seen)
        record.update(zipf_cut=found["zipf_cut"], text_share=found["text_share"], skipped=found["skipped"])
        record["sources"].append({"source": SOURCE, "file": os.path.basename(path), "sha256": sha256_file(path),
                                  "entries": len(entries)})
    if extra:
        found, changed = read_extra(extra, language)
        added = _dedupe(found, seen)
        entries += added
        record["sources"].append({"source": "user file", "file": extra, "sha256": sha256_file(extra),
                                  "entries": len(added), "changed_by_normalising": len(changed),
                                  "changed_examples": changed[:20]})
    if not entries:
        raise ValueError(f"no entries for language {language!r}: not a wordfreq language and no --extra file")
    record.update(entries=len(entries), lowest_ranked=entries[-20:],
                  sha256=hashlib.sha256(section_bytes(language, entries)).hexdigest())
    return entries, record


def build_worldwide(opts: WorldwideOptions) -> tuple[list[tuple[str, list[str]]], dict]:
    """[(language, entries)] in code order and the manifest."""
    import wordfreq

    extras = dict(opts.extras)
    languages = sorted(set(opts.languages or wordfreq_languages()) | set(extras))
    if "en" in languages:  # curate matches English with --vocab, ids 0..N-1
        raise ValueError("the worldwide list has no 'en' section: English entries come from the English list")
    sections, records, first_id = [], {}, 0
    for language in languages:
        entries, record = build_language(language, opts, extras.get(language))
        record["first_line"] = first_id  # 0-based line of the language's first entry
        first_id += len(entries)
        sections.append((language, entries))
        records[language] = record
    data = b"".join(section_bytes(lang, entries) for lang, entries in sections)
    manifest = {
        "list": LIST_NAME,
        "languages": len(sections),
        "entries": first_id,
        "sha256": hashlib.sha256(data).hexdigest(),
        "sha256_of": "the uncompressed list: UTF-8, one 'LANG<TAB>entry' a line",
        "source": {"package": SOURCE, "version": _version(), "wordlist": "best (large where it exists, else small)"},
        "licence": ATTRIBUTION,
        "options": {"min_zipf": opts.min_zipf, "max_entries": opts.max_entries,
                    "languages": list(opts.languages) if opts.languages else None,
                    "extras": [list(pair) for pair in opts.extras]},
        "per_language": records,
        "wordfreq_languages": len(wordfreq.available_languages("best")),
    }
    return sections, manifest


def _version() -> str:
    from importlib.metadata import version

    return version(SOURCE)


def write_worldwide(sections, manifest: dict, out_dir: str) -> None:
    data = b"".join(section_bytes(lang, entries) for lang, entries in sections)
    manifest["compressed_bytes"] = write_gzipped(os.path.join(out_dir, LIST_NAME), data)
    write_manifest(os.path.join(out_dir, MANIFEST_NAME), manifest)


def shipped_worldwide_path() -> str:
    return os.path.join(HERE, LIST_NAME)


def load_manifest(directory: str = HERE) -> dict:
    return build.load_manifest(directory, MANIFEST_NAME)


def check_not_english(language: str, path: str) -> None:
    if language == "en":
        raise ValueError(f"{path}: an 'en' section; English entries come from --vocab (ids 0..N-1)")


def read_sections(path: str) -> list[tuple[str, list[str]]]:
    """[(language, entries)] in file order; a language's lines must be contiguous."""
    opener = gzip.open if path.endswith(".gz") else open
    sections: list[tuple[str, list[str]]] = []
    # newline="": a "\r" stays in the line and fails the check below, as the matcher would
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        for line_number, line in enumerate(f, 1):
            language, tab, entry = line.rstrip("\n").partition("\t")
            if not tab or not language or not entry.strip() or entry != entry.strip():
                raise ValueError(f"{path}:{line_number}: expected 'LANG<TAB>entry' with no outer spaces")
            if not sections or sections[-1][0] != language:
                check_not_english(language, path)
                if any(language == seen for seen, _ in sections):
                    raise ValueError(f"{path}:{line_number}: the lines of {language!r} are not contiguous")
                sections.append((language, []))
            sections[-1][1].append(entry)
    return sections


def verify(directory: str = HERE, languages: Optional[tuple[str, ...]] = None) -> list[str]:
    """Rebuild (every language, or only `languages`: a quick check) with the manifest's options;
    [] when the shipped list, its sections and the sources all match the manifest."""
    manifest = load_manifest(directory)
    problems = []
    shipped = list_sha256(os.path.join(directory, manifest["list"]))
    if shipped != manifest["sha256"]:
        problems.append(f"the shipped list's sha256 {shipped} differs from the manifest's {manifest['sha256']}")
    options = manifest["options"]
    opts = WorldwideOptions(options["min_zipf"], options["max_entries"],
                            tuple(options["languages"]) if options["languages"] else None,
                            tuple(tuple(pair) for pair in options["extras"]))
    if languages:
        unknown = sorted(set(languages) - set(manifest["per_language"]))
        if unknown:
            return problems + [f"languages not in the manifest: {', '.join(unknown)}"]
        extras = dict(opts.extras)
        for language in languages:
            _, record = build_language(language, opts, extras.get(language))
            problems += _compare(language, manifest["per_language"][language], record)
        return problems
    _, rebuilt = build_worldwide(opts)
    for language, recorded in manifest["per_language"].items():
        problems += _compare(language, recorded, rebuilt["per_language"].get(language, {}))
    if rebuilt["sha256"] != manifest["sha256"]:
        problems.append(f"rebuilt list sha256 {rebuilt['sha256']} ({rebuilt['entries']} entries) differs from "
                        f"the manifest's {manifest['sha256']} ({manifest['entries']} entries)")
    return problems


def _compare(language: str, recorded: dict, rebuilt: dict) -> list[str]:
    problems = []
    for old, new in zip(recorded["sources"], rebuilt.get("sources", [])):
        if old["sha256"] != new["sha256"]:
            problems.append(f"{language}: source {new['file']} has sha256 {new['sha256']}, manifest has {old['sha256']}")
    if recorded["sha256"] != rebuilt.get("sha256"):
        problems.append(f"{language}: rebuilt section sha256 {rebuilt.get('sha256')} ({rebuilt.get('entries')} "
                        f"entries) differs from the manifest's {recorded['sha256']} ({recorded['entries']} entries)")
    return problems


def parse_extra(value: str) -> tuple[str, str]:
    language, sep, path = value.partition("=")
    if not sep or not language or not path:
        raise ValueError(f"--extra takes LANG=FILE, got {value!r}")
    if not re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]{2,8})*", language):
        raise ValueError(f"--extra {value!r}: LANG is a lower-case language code as fastText labels "
                         f"captions (th, sw, pt-br), not {language!r}")
    return language, path


def main(args) -> int:
    """`openwit vocab build|verify --worldwide` (the parser is query_lists/build.py's)."""
    import sys

    languages = tuple(args.languages.split(",")) if getattr(args, "languages", None) else None
    if args.command == "verify":
        problems = verify(args.dir, languages)
        for problem in problems:
            print(f"FAIL {problem}", file=sys.stderr)
        if not problems:
            manifest = load_manifest(args.dir)
            checked = ", ".join(languages) if languages else f"all {manifest['languages']} languages"
            print(f"OK {checked}; list: {manifest['entries']} entries, sha256 {manifest['sha256']}")
        return 1 if problems else 0
    try:
        extras = tuple(parse_extra(value) for value in args.extra or ())
        opts = WorldwideOptions(args.min_zipf, args.max_entries, languages, extras)
        sections, manifest = build_worldwide(opts)
    except (ValueError, OSError) as err:  # a bad --extra or --languages: the user's to fix
        print(f"openwit vocab build --worldwide: {err}", file=sys.stderr)
        return 2
    write_worldwide(sections, manifest, args.output)
    for language, record in manifest["per_language"].items():
        print(f"{language:<5}{record['entries']:>8} entries  Zipf >= {record.get('zipf_cut')}  "
              f"text share {record.get('text_share')}")
    print(f"total {manifest['entries']} entries in {manifest['languages']} languages, "
          f"{manifest['compressed_bytes']:,} bytes compressed; sha256 {manifest['sha256']}")
    return 0
