"""Build the query vocabulary from real sources, reproducibly (`openwit vocab build|verify`).

Sources, in MetaCLIP's order (an entry keeps the position of its first source):
1. WordNet 3.0 lemma names (Debian package wordnet-base), underscores as spaces;
2. English Wikipedia unigrams counted >= --min-unigram-count times (PyPI pywordfreq);
3. bigrams with high pointwise mutual information, from the web unigram and bigram counts of
   PyPI wordsegment, both words known (WordNet or Wikipedia) to keep web junk out;
4. optionally, a user-supplied titles file (one title a line).
Entries that MetaCLIP's matcher can never match (they contain , . ; : ? ! ` or tabs) are left
out. Entry id = line number of the written list. The list's sha256 is over its uncompressed
text, so it does not depend on the gzip implementation.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from fractions import Fraction
from math import log2
from typing import Iterable, Optional

WORDNET_DIR = "/usr/share/wordnet"
WORDNET_POS = ("noun", "verb", "adj", "adv")
HERE = os.path.dirname(os.path.abspath(__file__))
LIST_NAME = "entries.txt.gz"
MANIFEST_NAME = "MANIFEST.json"
TARGET = 500_000

_WORD = re.compile(r"^[^\W_]+(?:['\-][^\W_]+)*$")  # letters/digits, inner ' or - (e.g. o'neill)
_UNMATCHABLE = re.compile(r"[,.;:?!`\t\n\r]")
_ADJECTIVE_MARKER = re.compile(r"\((a|p|ip)\)$")


@dataclass(frozen=True)
class BuildOptions:
    min_unigram_count: int = 100  # the CLIP paper's rule for Wikipedia words
    min_pmi_bits: float = 4.0  # a bigram seen >= 16x more often than its words by chance
    wordnet_dir: str = WORDNET_DIR
    titles: Optional[str] = None


def is_word(token: str) -> bool:
    return bool(_WORD.match(token)) and not token.isdigit()


def wordnet_lemmas(wordnet_dir: str) -> list[str]:
    """Lemma names of every synset, in file order (noun, verb, adj, adv)."""
    lemmas = []
    for pos in WORDNET_POS:
        with open(os.path.join(wordnet_dir, f"data.{pos}"), encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):  # the licence header
                    continue
                fields = line.split(" ")
                for i in range(int(fields[3], 16)):
                    lemmas.append(_ADJECTIVE_MARKER.sub("", fields[4 + 2 * i]).replace("_", " "))
    return lemmas


def wikipedia_unigrams(path: str, min_count: int) -> list[str]:
    """Word-like tokens counted >= min_count times, most frequent first."""
    counted = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            word, _, count = line.rstrip("\n").rpartition(";")
            if count.isdigit() and int(count) >= min_count and is_word(word):
                counted.append((-int(count), word))
    return [word for _, word in sorted(counted)]


def read_counts(path: str) -> dict[str, int]:
    counts = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, _, count = line.rstrip("\n").rpartition("\t")
            counts[key] = int(count)
    return counts


def pmi_bigrams(unigram_path: str, bigram_path: str, known: set[str], min_pmi_bits: float) -> list[tuple[str, float]]:
    """(bigram, PMI in bits), highest first, for bigrams of two known words.

    PMI = log2(p(ab) / (p(a) p(b))), compared as an exact fraction so that the cut and the
    order do not depend on floating-point rounding."""
    unigrams, bigrams = read_counts(unigram_path), read_counts(bigram_path)
    n_uni, n_bi = sum(unigrams.values()), sum(bigrams.values())
    threshold = Fraction(2) ** Fraction(min_pmi_bits).limit_denominator(1000)
    scored = []
    for bigram, count in bigrams.items():
        words = bigram.split(" ")
        if len(words) != 2 or not all(_plain_word(w, known) and w in unigrams for w in words):
            continue
        ratio = Fraction(count * n_uni * n_uni, n_bi * unigrams[words[0]] * unigrams[words[1]])
        if ratio >= threshold:
            scored.append((-ratio, bigram))
    scored.sort()
    return [(bigram, round(log2(-ratio), 4)) for ratio, bigram in scored]


def _plain_word(word: str, known: set[str]) -> bool:
    # Single letters other than "a" and "i" are tokenisation debris ("don t", "s business").
    return word.isalpha() and (len(word) > 1 or word in ("a", "i")) and word in known


def read_titles(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [" ".join(line.split()) for line in f if line.strip()]


def assemble(sources: list[tuple[str, Iterable[str]]]) -> tuple[list[str], dict[str, dict]]:
    """Concatenate sources in order, keeping each entry's first occurrence only."""
    entries, seen, stats = [], set(), {}
    for name, candidates in sources:
        added = skipped = 0
        for entry in candidates:
            if not entry or entry in seen or _UNMATCHABLE.search(entry):
                skipped += 1
                continue
            seen.add(entry)
            entries.append(entry)
            added += 1
        stats[name] = {"entries": added, "skipped": skipped, "lowest_ranked": entries[len(entries) - min(added, 20):]}
    return entries, stats


def list_bytes(entries: list[str]) -> bytes:
    return ("\n".join(entries) + "\n").encode("utf-8")


def gzip_bytes(data: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as f:
        f.write(data)  # mtime 0 and no file name: the same text gives the same file
    return out.getvalue()


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_sha256(path: str) -> str:
    """sha256 of a list's text (uncompressed), so .txt and .txt.gz of one list agree."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def package_file(package: str, name: str) -> str:
    module = __import__(package)
    path = os.path.join(os.path.dirname(module.__file__), name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name} not found in the {package} package at {path}")
    return path


def _version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


def _debian_version(package: str) -> Optional[str]:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def source_files(opts: BuildOptions) -> dict:
    """Every input file with its package, version and sha256: what the manifest pins."""
    wordnet = [os.path.join(opts.wordnet_dir, f"data.{pos}") for pos in WORDNET_POS]
    missing = [p for p in wordnet if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(
            f"WordNet 3.0 data files not found ({missing[0]}); install them with `apt-get install wordnet-base`"
        )
    files = {
        "wordnet": ("wordnet-base (Debian)", _debian_version("wordnet-base"), wordnet),
        "wikipedia_unigrams": ("pywordfreq", _version("pywordfreq"), [package_file("pywordfreq", "word_frequencies.gz")]),
        "pmi_bigrams": ("wordsegment", _version("wordsegment"),
                        [package_file("wordsegment", "unigrams.txt"), package_file("wordsegment", "bigrams.txt")]),
    }
    if opts.titles:
        files["titles"] = ("user file", None, [opts.titles])
    return {
        name: {"package": pkg, "version": ver, "files": [{"path": p, "sha256": sha256_file(p)} for p in paths]}
        for name, (pkg, ver, paths) in files.items()
    }


def build_vocab(opts: BuildOptions) -> tuple[list[str], dict]:
    """The entries and their manifest (sources, thresholds, counts, sha256)."""
    sources = source_files(opts)
    lemmas = wordnet_lemmas(opts.wordnet_dir)
    unigrams = wikipedia_unigrams(sources["wikipedia_unigrams"]["files"][0]["path"], opts.min_unigram_count)
    known = {token.lower() for lemma in lemmas for token in lemma.split(" ")} | set(unigrams)
    bigram_files = [f["path"] for f in sources["pmi_bigrams"]["files"]]
    bigrams = pmi_bigrams(bigram_files[0], bigram_files[1], known, opts.min_pmi_bits)
    ordered = [("wordnet", lemmas), ("wikipedia_unigrams", unigrams), ("pmi_bigrams", [b for b, _ in bigrams])]
    if opts.titles:
        ordered.append(("titles", read_titles(opts.titles)))
    entries, stats = assemble(ordered)
    for name in stats:
        stats[name].update(sources[name])
    manifest = {
        "list": LIST_NAME,
        "entries": len(entries),
        "target": TARGET,
        "sha256": hashlib.sha256(list_bytes(entries)).hexdigest(),
        "sha256_of": "the uncompressed list: UTF-8, one entry a line, entry id = 0-based line number",
        "options": {k: v for k, v in asdict(opts).items() if k != "wordnet_dir"},
        "sources": stats,
        "lowest_pmi_bits": bigrams[-1][1] if bigrams else None,
    }
    return entries, manifest


def write_vocab(entries: list[str], manifest: dict, out_dir: str) -> None:
    write_gzipped(os.path.join(out_dir, LIST_NAME), list_bytes(entries))
    write_manifest(os.path.join(out_dir, MANIFEST_NAME), manifest)


def write_gzipped(path: str, data: bytes) -> int:
    """A shipped list, gzipped reproducibly (gzip_bytes); -> its compressed size."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(gzip_bytes(data))
    return os.path.getsize(path)


def write_manifest(path: str, manifest: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False, sort_keys=True)
        f.write("\n")


def shipped_list_path() -> str:
    return os.path.join(HERE, LIST_NAME)


def load_manifest(directory: str = HERE, name: str = MANIFEST_NAME) -> dict:
    with open(os.path.join(directory, name), encoding="utf-8") as f:
        return json.load(f)


def verify(directory: str = HERE) -> list[str]:
    """Rebuild from the sources with the manifest's options; [] when everything matches."""
    manifest = load_manifest(directory)
    shipped_sha = list_sha256(os.path.join(directory, manifest["list"]))
    problems = []
    if shipped_sha != manifest["sha256"]:
        problems.append(f"the shipped list's sha256 {shipped_sha} differs from the manifest's {manifest['sha256']}")
    options = manifest["options"]
    if options.get("titles"):
        problems.append("the list was built with a titles file; verify needs it at the recorded path")
    _, rebuilt = build_vocab(BuildOptions(**options))
    for name, source in manifest["sources"].items():
        for recorded, now in zip(source["files"], rebuilt["sources"].get(name, {}).get("files", [])):
            if recorded["sha256"] != now["sha256"]:
                problems.append(f"source {name}: {now['path']} has sha256 {now['sha256']}, manifest has {recorded['sha256']}")
    if rebuilt["sha256"] != manifest["sha256"]:
        problems.append(f"rebuilt list sha256 {rebuilt['sha256']} ({rebuilt['entries']} entries) differs from "
                        f"the manifest's {manifest['sha256']} ({manifest['entries']} entries)")
    return problems


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openwit vocab", description="Build or verify the query vocabulary.")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the list and its MANIFEST.json from the sources")
    build.add_argument("--output", default=HERE, help="directory for entries.txt.gz and MANIFEST.json")
    build.add_argument("--min-unigram-count", type=int, default=BuildOptions.min_unigram_count)
    build.add_argument("--min-pmi-bits", type=float, default=BuildOptions.min_pmi_bits)
    build.add_argument("--titles", default=None, help="optional file of titles, one a line")
    build.add_argument("--wordnet-dir", default=WORDNET_DIR)
    verify_cmd = sub.add_parser("verify", help="rebuild from the sources and check the shipped sha256")
    verify_cmd.add_argument("--dir", default=HERE, help="directory holding the list and MANIFEST.json")
    _worldwide_arguments(build, verify_cmd)
    return parser


def _worldwide_arguments(build, verify_cmd) -> None:
    """--worldwide: the per-language lists (query_lists/worldwide.py, docs/vocabulary.md)."""
    from openwit.query_lists.worldwide import WorldwideOptions

    for cmd in (build, verify_cmd):
        cmd.add_argument("--worldwide", action="store_true",
                         help="the worldwide per-language list (worldwide.txt.gz, WORLDWIDE_MANIFEST.json)")
        cmd.add_argument("--languages", default=None,
                         help="--worldwide: comma-separated languages (build: default every wordfreq language "
                              "but en; verify: rebuild only these, a quick check)")
    build.add_argument("--min-zipf", type=float, default=WorldwideOptions.min_zipf,
                       help="--worldwide: lowest Zipf frequency kept (3.0: once per million words)")
    build.add_argument("--max-entries", type=int, default=WorldwideOptions.max_entries,
                       help="--worldwide: most entries per language (cut at a whole frequency band)")
    build.add_argument("--extra", action="append", metavar="LANG=FILE",
                       help="--worldwide: a file of entries (one a line) appended to LANG's list (repeatable)")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.worldwide:
        from openwit.query_lists import worldwide

        return worldwide.main(args)
    if args.command == "verify":
        problems = verify(args.dir)
        for problem in problems:
            print(f"FAIL {problem}", file=sys.stderr)
        if not problems:
            print(f"OK {load_manifest(args.dir)['entries']} entries, sha256 {load_manifest(args.dir)['sha256']}")
        return 1 if problems else 0
    opts = BuildOptions(args.min_unigram_count, args.min_pmi_bits, args.wordnet_dir, args.titles)
    entries, manifest = build_vocab(opts)
    write_vocab(entries, manifest, args.output)
    for name, stats in manifest["sources"].items():
        print(f"{name:<20}{stats['entries']:>9} entries")
    print(f"{'total':<20}{len(entries):>9} entries ({len(entries) / TARGET:.1%} of the {TARGET:,} target)")
    print(f"sha256 {manifest['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
