"""Build the labelled language-ID evaluation set for short captions (tests/fixtures/lid_eval.tsv).

Real short text that no one in this project wrote, labelled by where it comes from:
- the translated strings of Debian desktop entries: `Name[xx]=`, `Comment[xx]=`,
  `GenericName[xx]=` in the .desktop/.directory files of the packages in PACKAGES, labelled
  by their locale key; the untranslated `Name=`/`Comment=`/`GenericName=` and the `[en_GB]`,
  `[en_AU]`... keys are English;
- English definitions and example sentences of WordNet 3.0 (Debian package wordnet-base),
  short descriptive phrases like alt-texts ("a small yellow citrus fruit");
- the UDHR sentences of tests/fixtures/lid_sentences.tsv (long text in 17 languages).

Usage (needs Debian's apt and dpkg-deb; the .deb files are read, never installed):
    python bench/lid_eval/build_eval_set.py --debs /tmp/lid_debs --download
    python bench/lid_eval/build_eval_set.py --debs /tmp/lid_debs   # from already downloaded .debs

Rows are chosen by keyed hashes, so the same packages give the same file on every machine.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from openwit.pipeline.common.keyed import keyed_int  # noqa: E402
from openwit.pipeline.stages.text import word_count  # noqa: E402

# Desktop packages with many translated entries; data-only or small where possible.
PACKAGES = (
    "chromium", "notification-daemon", "system-config-printer", "vim-gui-common",
    "gnome-menus", "lxmenu-data", "gnome-control-center", "gnome-tweaks",
    "mate-control-center", "mate-control-center-common",
    "xfce4-settings", "xfce4-panel", "xfce4-power-manager", "xfce4-session", "xfce4-terminal",
    "xfce4-appfinder", "thunar", "mousepad", "ristretto",
    "lxqt-config", "lxqt-session",
    "plasma-workspace-data", "plasma-desktop-data", "kdeplasma-addons-data", "kwin-data",
    "powerdevil-data", "kinfocenter", "kmenuedit", "systemsettings", "kde-cli-tools",
)
KEYS = ("Name", "GenericName", "Comment")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
OUT_NAME = "lid_eval.tsv"
MANIFEST_NAME = "lid_eval.manifest.json"
WORDNET_DIR = "/usr/share/wordnet"

PER_LANGUAGE = 30  # foreign desktop strings kept per language: every language weighs the same
WORDNET_DEFINITIONS = 700
WORDNET_EXAMPLES = 200
# Not labelled either way: Shavian-script and quote-variant English, KDE's pseudo-locale, and
# Scots, which is written so close to English that neither label would be fair.
SKIP_LOCALES = re.compile(r"^(en@.*|x-test|sco)$")
_LINE = re.compile(r"^(Name|GenericName|Comment)(?:\[([^\]]+)\])?\s*=\s*(.*)$")
_ESCAPES = {"s": " ", "n": " ", "t": " ", "r": " ", "\\": "\\", ";": ";"}


def language_of(locale: str) -> str:
    """'pt_BR' -> 'pt', 'sr@latin' -> 'sr', '' -> 'en' (the untranslated key)."""
    return re.split(r"[_@.]", locale)[0].lower() if locale else "en"


def unescape(value: str) -> str:
    text = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), value)
    return " ".join(text.split())


def desktop_strings(text: str):
    """(group, key, locale, value) of every Name/GenericName/Comment line of a desktop file."""
    group = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1]
            continue
        match = _LINE.match(line)
        if match:
            key, locale, value = match.groups()
            yield group, key, locale or "", unescape(value)


def entry_rows(text: str, origin: str):
    """Labelled rows of one desktop file. A translation equal to the English string of the
    same key was left untranslated ("Name[de]=Thunar") and says nothing about German."""
    by_key = defaultdict(dict)
    for group, key, locale, value in desktop_strings(text):
        if value and not SKIP_LOCALES.match(locale):
            by_key[(group, key)][locale] = value
    for strings in by_key.values():
        english = {v.casefold() for loc, v in strings.items() if language_of(loc) == "en"}
        for locale, value in strings.items():
            language = language_of(locale)
            if language != "en" and value.casefold() in english:
                continue
            yield language, origin, value


def deb_files(deb: str):
    """(package, version, {path: text}) of the desktop files inside a .deb, read without installing."""
    fields = subprocess.run(["dpkg-deb", "-f", deb, "Package", "Version"], check=True,
                            capture_output=True, text=True).stdout
    info = dict(line.split(": ", 1) for line in fields.splitlines())
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], check=True, capture_output=True).stdout
    files = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith((".desktop", ".directory")):
                files[member.name.lstrip("./")] = tar.extractfile(member).read().decode("utf-8", "replace")
    return info["Package"], info["Version"], files


def wordnet_rows(wordnet_dir: str):
    """English definitions ("a small yellow citrus fruit") and example sentences of WordNet."""
    definitions, examples = [], []
    for pos in ("noun", "verb", "adj", "adv"):
        with open(os.path.join(wordnet_dir, f"data.{pos}"), encoding="utf-8") as f:
            for line in f:
                if line.startswith("  ") or " | " not in line:
                    continue
                for part in line.split(" | ", 1)[1].strip().split("; "):
                    part = part.strip()
                    if part.startswith('"'):
                        examples.append(part.strip('"').strip())
                    elif part:
                        definitions.append(part)
    return definitions, examples


def udhr_rows():
    with open(os.path.join(FIXTURES, "lid_sentences.tsv"), encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip() and not line.startswith("#")]


def first_by_hash(rows, n: int, person: bytes):
    """The n rows with the smallest keyed hash of their text: a fixed, order-free sample."""
    return sorted(rows, key=lambda row: keyed_int(row[-1].encode("utf-8"), person))[:n]


def package_version(name: str) -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", name], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def build(debs_dir: str, wordnet_dir: str):
    english, foreign, packages = [], defaultdict(list), {}
    for deb in sorted(glob.glob(os.path.join(debs_dir, "*.deb"))):
        package, version, files = deb_files(deb)
        if package not in PACKAGES:
            continue
        packages[package] = {"version": version, "desktop_files": len(files),
                             "deb_sha256": hashlib.sha256(open(deb, "rb").read()).hexdigest()}
        for path, text in sorted(files.items()):
            for language, origin, value in entry_rows(text, f"desktop:{package}"):
                if word_count(value) >= 2:
                    (english if language == "en" else foreign[language]).append((language, origin, value))
    missing = sorted(set(PACKAGES) - set(packages))
    if missing:
        raise SystemExit(f"missing .debs for {missing}: run with --download")
    rows = dedup(english)
    for language in sorted(foreign):
        rows += first_by_hash(dedup(foreign[language]), PER_LANGUAGE, b"lid-eval-lang")
    definitions, examples = wordnet_rows(wordnet_dir)
    rows += first_by_hash([("en", "wordnet:definition", t) for t in set(definitions) if word_count(t) >= 2],
                          WORDNET_DEFINITIONS, b"lid-eval-wn")
    rows += first_by_hash([("en", "wordnet:example", t) for t in set(examples) if word_count(t) >= 2],
                          WORDNET_EXAMPLES, b"lid-eval-wn")
    rows += [(language, "udhr", text) for language, text in udhr_rows()]
    return dedup(rows), packages


def dedup(rows):
    """One row per (label, text), the first seen; a text with two labels is ambiguous: dropped."""
    labels = defaultdict(set)
    for language, _, text in rows:
        labels[text].add(language == "en")
    seen, out = set(), []
    for row in rows:
        if len(labels[row[2]]) == 1 and (row[0], row[2]) not in seen:
            seen.add((row[0], row[2]))
            out.append(row)
    return out


def write(rows, packages, out_dir: str):
    body = "".join(f"{language}\t{origin}\t{text}\n" for language, origin, text in rows)
    with open(os.path.join(out_dir, OUT_NAME), "w", encoding="utf-8") as f:
        f.write(body)
    counts = defaultdict(int)
    for language, origin, _ in rows:
        counts[f"{origin.split(':')[0]}:{'en' if language == 'en' else 'foreign'}"] += 1
    manifest = {
        "file": OUT_NAME, "rows": len(rows), "sha256": hashlib.sha256(body.encode("utf-8")).hexdigest(),
        "columns": ["language (fastText-style code of the locale key; en = English)", "source", "text"],
        "counts": dict(sorted(counts.items())),
        "languages": len({language for language, _, _ in rows}),
        "debian_packages": packages, "wordnet": {"package": "wordnet-base", "version": package_version("wordnet-base")},
        "options": {"per_language": PER_LANGUAGE, "wordnet_definitions": WORDNET_DEFINITIONS,
                    "wordnet_examples": WORDNET_EXAMPLES, "min_words": 2},
        "licences": {
            "desktop strings": "from the Debian packages listed (free software: GPL/LGPL and compatible "
                               "licences, see each package's /usr/share/doc/<package>/copyright)",
            "wordnet": "WordNet 3.0 licence (Princeton; free to use, copy and distribute with the notice)",
            "udhr": "Universal Declaration of Human Rights; the UN permits free reproduction",
        },
    }
    with open(os.path.join(out_dir, MANIFEST_NAME), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)
        f.write("\n")
    return manifest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--debs", required=True, help="folder of the packages' .deb files")
    parser.add_argument("--download", action="store_true", help="apt-get download the packages into --debs first")
    parser.add_argument("--wordnet-dir", default=WORDNET_DIR)
    parser.add_argument("--out-dir", default=FIXTURES)
    args = parser.parse_args(argv)
    if args.download:
        os.makedirs(args.debs, exist_ok=True)
        subprocess.run(["apt-get", "download", *PACKAGES], cwd=args.debs, check=True)
    rows, packages = build(args.debs, args.wordnet_dir)
    manifest = write(rows, packages, args.out_dir)
    print(json.dumps({k: manifest[k] for k in ("rows", "counts", "languages", "sha256")}, indent=1))


if __name__ == "__main__":
    main()
