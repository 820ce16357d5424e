"""Matcher speed against the full shipped vocabulary: MetaCLIP's naive loop vs openwit's
Aho-Corasick matcher, on the same captions, one core.

Goals (issue 4): the matcher is >= 20x the naive loop and matches >= 1M captions/min.
Captions are synthetic alt-texts made of seeded random entries of the list with punctuation.

    python bench/bench_match.py [--captions 20000] [--naive-captions 40]
"""
from __future__ import annotations

import argparse
import random
import time

from openwit.pipeline.stages.match import Matcher, read_vocab, spaced_caption
from openwit.query_lists.build import shipped_list_path


def naive_match(caption: str, spaced_entries: list[str]) -> tuple[int, ...]:
    """MetaCLIP's reference: test every " entry " against the spaced caption."""
    text = spaced_caption(caption)
    return tuple(i for i, entry in enumerate(spaced_entries) if entry in text)


def make_captions(entries: list[str], n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    fillers = ["a", "the", "of", "photo", "with", "and", "in", "on", "for", "new"]
    captions = []
    for _ in range(n):
        words = [rng.choice(entries) if rng.random() < 0.4 else rng.choice(fillers) for _ in range(rng.randint(4, 14))]
        captions.append(" ".join(words) + rng.choice(["", ".", "!", " - stock photo", ", 2019"]))
    return captions


def rate(fn, captions, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        for caption in captions:
            fn(caption)
    return repeat * len(captions) / (time.perf_counter() - start)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=20_000)
    parser.add_argument("--naive-captions", type=int, default=40, help="the naive loop is slow: fewer captions")
    args = parser.parse_args()
    entries = read_vocab(shipped_list_path())
    start = time.perf_counter()
    matcher = Matcher.from_entries(entries)
    build_s = time.perf_counter() - start
    captions = make_captions(entries, args.captions)
    same = captions[: args.naive_captions]
    spaced = [f" {e} " for e in entries]
    assert all(matcher.match(c) == naive_match(c, spaced) for c in same[:10])

    naive = rate(lambda c: naive_match(c, spaced), same)
    fast_same = rate(matcher.match, same, repeat=max(1, 20_000 // len(same)))
    fast_all = rate(matcher.match, captions)
    ratio = fast_same / naive
    print(f"vocabulary: {len(entries):,} entries; automaton built in {build_s:.1f}s")
    print(f"{'measure':<44}{'value':>14}  {'goal':>12}  verdict")
    print(f"{'naive loop, captions/s':<44}{naive:>14,.0f}")
    print(f"{'aho-corasick, same captions, captions/s':<44}{fast_same:>14,.0f}")
    print(f"{'ratio aho-corasick / naive':<44}{ratio:>13,.0f}x  {'>= 20x':>12}  {verdict(ratio >= 20)}")
    print(f"{'aho-corasick, all captions, captions/min':<44}{fast_all * 60:>14,.0f}  {'>= 1,000,000':>12}  "
          f"{verdict(fast_all * 60 >= 1_000_000)}")


if __name__ == "__main__":
    main()
