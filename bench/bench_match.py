"""Matcher speed: openwit's span lookup against MetaCLIP's per-entry substring loop.

Both give the same entry ids (tests/test_match.py checks it); this prints how much faster
the span lookup is as the vocabulary grows. Captions and vocabulary are synthetic (seeded).

    python bench/bench_match.py [--captions 2000]
"""
from __future__ import annotations

import argparse
import random
import time

from openwit.pipeline.stages.match import Matcher, spaced_caption


def metaclip_loop(caption: str, spaced_entries: list[str]) -> list[int]:
    text = spaced_caption(caption)
    return [i for i, entry in enumerate(spaced_entries) if entry in text]


def make_vocab(size: int, rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = {"".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(size)}
    words = sorted(words)
    bigrams = [f"{rng.choice(words)} {rng.choice(words)}" for _ in range(size // 5)]
    return words + bigrams


def make_captions(vocab: list[str], n: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(4, 14))) + rng.choice([".", "!", ""]) for _ in range(n)]


def seconds(fn, captions) -> float:
    start = time.perf_counter()
    for caption in captions:
        fn(caption)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(0)
    print(f"{'vocab':>8} {'metaclip loop us/caption':>26} {'span lookup us/caption':>24} {'speedup':>8}")
    for size in (1_000, 10_000, 100_000):
        vocab = make_vocab(size, rng)
        captions = make_captions(vocab, args.captions, rng)
        spaced = [f" {e} " for e in vocab]
        matcher = Matcher.from_entries(vocab)
        assert all(tuple(metaclip_loop(c, spaced)) == matcher.match(c) for c in captions[:50])
        loop_n = captions[: max(20, args.captions // (size // 1000))]  # the loop is slow: fewer captions
        base = seconds(lambda c: metaclip_loop(c, spaced), loop_n) / len(loop_n)
        fast = seconds(matcher.match, captions) / len(captions)
        print(f"{len(vocab):>8} {base * 1e6:>26.1f} {fast * 1e6:>24.1f} {base / fast:>7.0f}x")


if __name__ == "__main__":
    main()
