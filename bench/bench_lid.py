"""English language ID on short captions: today's rule against the English rule (issue 20).

Reads the labelled set tests/fixtures/lid_eval.tsv (built by bench/lid_eval/build_eval_set.py
from Debian desktop-entry translations, WordNet glosses and the UDHR sentences), splits it into
a tuning half and a held-out half by a keyed hash of the text, and prints, per half and caption
length, English recall (English captions kept with --languages en) and foreign leak (foreign
captions kept). Usage: python bench/bench_lid.py [--details] [--search] [--runner-up]
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from openwit.pipeline.common.keyed import uniform  # noqa: E402
from openwit.pipeline.stages.text import (  # noqa: E402
    ENGLISH_RULE, RUNNER_UP_FLOOR, EnglishRule, detect_language, is_english, latin_share, load_lid_model, word_count,
)

EVAL_SET = os.path.join(ROOT, "tests", "fixtures", "lid_eval.tsv")
SPLIT_PERSON = b"lid-eval-split"
LENGTHS = {"2-6 words": (2, 6), "7+ words": (7, 10**9)}


def today(caption, guess) -> bool:
    """The rule before issue 20: fastText's top label must be en."""
    return guess.label == "en"


RULES = {"today (top label en)": today, "English rule": is_english}


def load_eval_set(path: str = EVAL_SET) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            language, source, text = line.rstrip("\n").split("\t")
            half = "tuning" if uniform(text.encode("utf-8"), SPLIT_PERSON) < 0.5 else "held-out"
            rows.append({"language": language, "source": source, "text": text, "half": half,
                         "words": word_count(text)})
    return rows


def guess_all(rows, model=None):
    model = model or load_lid_model()
    for row in rows:
        row["guess"] = detect_language(model, row["text"])
    return rows


def measure(rows, rule, half: str, length: str, foreign_filter=None) -> dict:
    """English recall and foreign leak of a rule on one half and length bucket."""
    low, high = LENGTHS[length]
    chosen = [r for r in rows if r["half"] == half and low <= r["words"] <= high]
    english = [r for r in chosen if r["language"] == "en"]
    foreign = [r for r in chosen if r["language"] != "en" and (foreign_filter is None or foreign_filter(r))]
    kept = lambda group: sum(bool(rule(r["text"], r["guess"])) for r in group)  # noqa: E731
    return {"english": len(english), "foreign": len(foreign),
            "recall": kept(english) / max(1, len(english)), "leak": kept(foreign) / max(1, len(foreign))}


def table(rows) -> list[str]:
    lines = ["| half | captions | rule | English recall | foreign leak | leak, Latin-script languages | n (en / foreign) |",
             "|---|---|---|---|---|---|---|"]
    latin = lambda r: latin_share(r["text"]) >= 0.9  # noqa: E731
    for half in ("tuning", "held-out"):
        for length in LENGTHS:
            for name, rule in RULES.items():
                m = measure(rows, rule, half, length)
                lat = measure(rows, rule, half, length, latin)
                lines.append(f"| {half} | {length} | {name} | {m['recall']:.1%} | {m['leak']:.1%} | "
                             f"{lat['leak']:.1%} | {m['english']} / {m['foreign']} |")
    return lines


def by_source(rows) -> list[str]:
    lines = ["", "English recall on 2-6 word captions by source (both halves):"]
    for source in sorted({r["source"].split(":")[0] + ":" + r["source"].split(":")[-1] if r["source"].startswith("wordnet")
                          else r["source"].split(":")[0] for r in rows if r["language"] == "en"}):
        group = [r for r in rows if r["language"] == "en" and 2 <= r["words"] <= 6
                 and (r["source"] == source or r["source"].startswith(source + ":"))]
        if group:
            cells = ", ".join(f"{name} {sum(bool(rule(r['text'], r['guess'])) for r in group) / len(group):.1%}"
                              for name, rule in RULES.items())
            lines.append(f"  {source} (n={len(group)}): {cells}")
    return lines


# The captions issue 20 reported lost: a rule must keep them.
ISSUE_CAPTIONS = ("The Tool Preset Editor", "Tutorial Step 2", "A yellow lemon.")
GRID = {"words_rank": (30_000, 50_000, 70_000, 100_000), "sure_en_score": (0.5, 0.7, 0.9),
        "half_covered": (0.5, 0.75, 1.0), "min_en_score": (0.01, 0.02, 0.03), "latin_share": (0.5, 0.9)}
MIN_TUNING_RECALL = 0.97  # two points over the 95% goal, as a margin for the held-out half


def search(rows, model=None) -> list[str]:
    """Every rule of GRID on the tuning half. Eligible: keeps ISSUE_CAPTIONS, long captions no
    worse than today (recall and leak), short-caption recall >= MIN_TUNING_RECALL. Chosen: the
    lowest short-caption leak, then the highest recall, then grid order. Held-out numbers are
    printed, never used to choose."""
    model = model or load_lid_model()
    issue = [(caption, detect_language(model, caption)) for caption in ISSUE_CAPTIONS]
    base = measure(rows, today, "tuning", "7+ words")
    results = []
    for values in itertools.product(*GRID.values()):
        rule = EnglishRule(*values)
        check = lambda text, guess, rule=rule: is_english(text, guess, rule)  # noqa: E731
        if not all(check(caption, guess) for caption, guess in issue):
            continue
        short, long = measure(rows, check, "tuning", "2-6 words"), measure(rows, check, "tuning", "7+ words")
        if short["recall"] >= MIN_TUNING_RECALL and long["recall"] >= base["recall"] and long["leak"] <= base["leak"]:
            results.append((short["leak"], -short["recall"], len(results), rule, check))
    results.sort(key=lambda x: x[:3])
    lines = ["", f"Eligible rules on the tuning half ({len(results)}), best first; shipped: {ENGLISH_RULE}"]
    for leak, minus_recall, _, rule, check in results[:8]:
        held = measure(rows, check, "held-out", "2-6 words")
        lines.append(f"  tuning recall {-minus_recall:.1%} leak {leak:.2%} | held-out recall {held['recall']:.1%} "
                     f"leak {held['leak']:.2%} | {tuple(rule)}")
    return lines


RUNNER_UP_FLOORS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)


def runner_up_counts(rows, half: str, floor: float) -> tuple[int, int]:
    """Captions of `half` fastText labelled en that the English rule rejects, whose runner-up
    scores at least `floor`: (how many have the runner-up as their language, how many)."""
    named = [r for r in rows if r["half"] == half and r["guess"].label == "en" and len(r["guess"].top) > 1
             and r["guess"].top[1][1] >= floor and not is_english(r["text"], r["guess"])]
    return sum(r["guess"].top[1][0] == r["language"] for r in named), len(named)


def choose_runner_up_floor(rows) -> float:
    """The lowest floor at which, on the tuning half, the runner-up is right at least as often
    as wrong (and names some caption); the last floor when none is."""
    for floor in RUNNER_UP_FLOORS:
        right, named = runner_up_counts(rows, "tuning", floor)
        if named and 2 * right >= named:
            return floor
    return RUNNER_UP_FLOORS[-1]


def runner_up_floors(rows) -> list[str]:
    lines = ["", f"Rule-rejected top-label-en captions: runner-up right / named, per floor "
                 f"(chosen {choose_runner_up_floor(rows)}, shipped {RUNNER_UP_FLOOR})"]
    for half in ("tuning", "held-out"):
        cells = [f"{floor:.2f}: %d/%d" % runner_up_counts(rows, half, floor) for floor in RUNNER_UP_FLOORS]
        lines.append(f"  {half}: " + ", ".join(cells))
    return lines


def details(rows) -> list[str]:
    out = ["", "Held-out 2-6 word errors of the English rule:"]
    for r in rows:
        if r["half"] == "held-out" and 2 <= r["words"] <= 6 and is_english(r["text"], r["guess"]) != (r["language"] == "en"):
            out.append(f"  {r['language']:4s} {r['guess'].label} {r['guess'].score:.2f}  {r['text']}")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--details", action="store_true", help="also list the held-out errors")
    parser.add_argument("--search", action="store_true", help="also search the rule's thresholds on the tuning half")
    parser.add_argument("--runner-up", action="store_true", help="also measure the runner-up floor (RUNNER_UP_FLOOR)")
    args = parser.parse_args(argv)
    rows = guess_all(load_eval_set())
    print("\n".join(table(rows) + by_source(rows) + (details(rows) if args.details else [])
                    + (search(rows) if args.search else []) + (runner_up_floors(rows) if args.runner_up else [])))


if __name__ == "__main__":
    main()
