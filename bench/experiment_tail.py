"""Does balancing help the long tail? A pre-registered, paired, many-concept test (issue 21 item 2).

The design is written down in docs/results.md ("A decisive experiment") before the run; this
script runs exactly that design and prints the table the document quotes.

The world: 64 concepts, each a (shape, colour) drawing with its own invented name ("zobeku"),
so a name can only be learnt from that concept's own examples. Concept frequencies follow a
steep Zipf law (s = 1.2): in a 24,000-pair pool the first concept has ~7,000 pairs, the last
~50. Captions name the concept and the background ("a zobeku on a beige background"); 10% are
web noise (another scene's caption). The pool is served on 127.0.0.1 and curated by the real
pipeline (`openwit curate`, bench/experiment_balance.curate_into) against the 64 names:
- balanced: openwit's balancing with a fixed t = 40: ~2,600 samples, tail concepts ~40 each;
- unbalanced: matching only, then a seeded subsample to the balanced set's size (tail ~6 each);
- online (optional, --variants): the whole matched pool, balanced per epoch in the loader.
Every variant trains the same CLIP for the same steps x batch with each seed (a seed fixes the
initial weights and the data order), every trainer setting passed explicitly (context length
included), and is evaluated zero-shot on a concept-uniform held-out set. The test: per metric
(uniform, head = 8 most frequent, tail = 16 least frequent), the per-seed paired difference
balanced - unbalanced, its mean with a 95% t-interval and a seeded bootstrap interval.

    python bench/experiment_tail.py --json tail.json        # CPU: ~17 CPU-min; 19.5 min on 2 shared cores
    python bench/experiment_tail.py --device cuda --jobs 1 --pool 200000 --concepts 112 --threshold 300 \
        --model base --steps 6000                           # a GPU's setting (not run yet)
    python bench/experiment_tail.py --tiny --json tail.json                # the plumbing only (tests)
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import experiment_balance as base  # noqa: E402  (curation and subsampling are shared)

from openwit.pipeline.demo import web as demo_web  # noqa: E402
from openwit.pipeline.output import layout  # noqa: E402
from openwit.trainer.config import TrainConfig  # noqa: E402
from openwit.trainer.data import list_shards  # noqa: E402
from openwit.trainer.evaluate import labelled_images, per_class_accuracy, zero_shot_predictions  # noqa: E402
from openwit.trainer.model import load_checkpoint  # noqa: E402
from openwit.trainer.train import train  # noqa: E402

COLOURS = ("red", "green", "blue", "orange", "purple", "yellow", "black")  # 4 by default: 64 concepts
CAPTIONS = ("a {name} on a {bg} background", "photo of a {name}", "A {name}, drawn on {bg}.",
            "the {name} on {bg}", "{name} clipart")
# Zero-shot prompts: the caption forms without the background, so that the test asks for the
# concept and nothing else (the trainer's default "a photo of a {}." prompts are not in the data).
PROMPTS = ("a {} on a white background", "a {} on a gray background", "a {} on a beige background",
           "photo of a {}", "{} clipart")
METRICS = ("uniform", "head", "tail")
VARIANTS = ("unbalanced", "balanced", "online")

# Every model and optimiser setting, passed to the trainer explicitly so that a change of the
# trainer's defaults (e.g. context_length) cannot change this experiment.
MODELS = {
    "small": dict(image_size=32, patch_size=8, vision_width=96, vision_layers=3, vision_heads=3,
                  context_length=40, text_width=64, text_layers=2, text_heads=2, embed_dim=64),
    "base": dict(image_size=48, patch_size=8, vision_width=256, vision_layers=6, vision_heads=4,
                 context_length=40, text_width=256, text_layers=4, text_heads=4, embed_dim=256),
}
OPTIMISER = dict(lr=2e-3, weight_decay=0.1, warmup_steps=50, grad_clip=1.0, accum_steps=1,
                 shuffle_buffer=1000, num_workers=0, precision="auto", compile=False,
                 grad_checkpointing=False, online_balance=0)


@dataclass
class Settings:
    concepts: int = 64
    zipf_s: float = 1.2
    noise: float = 0.1
    pool: int = 24_000
    threshold: int = 40  # balancing t, fixed in advance (docs/results.md)
    head: int = 8
    tail: int = 16
    steps: int = 600
    batch_size: int = 64
    model: str = "small"
    seeds: tuple = (0, 1, 2, 3, 4)
    variants: tuple = ("unbalanced", "balanced")
    heldout_per_concept: int = 20
    device: str = "cpu"
    jobs: int = 2  # runs at once (CPU: one thread each)
    out: str = "experiment_tail_out"
    bootstrap: int = 10_000
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------ the world


def invented_names(n: int, seed: int = 0) -> list[str]:
    """n distinct pronounceable non-words of three syllables, none an English caption word."""
    rng = random.Random(f"names:{seed}")
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    names: list[str] = []
    while len(names) < n:
        name = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(3))
        if name not in names:
            names.append(name)
    return names


def make_concepts(n: int) -> list[dict]:
    """Concepts in frequency rank order: name, shape, colour. Shape x colour pairs are shuffled
    (seeded) so that the head is not all one shape or one colour."""
    shapes = demo_web.SHAPES + demo_web.MORE_SHAPES
    colours = COLOURS[: max(1, math.ceil(n / len(shapes)))]
    if n > len(shapes) * len(COLOURS):
        raise ValueError(f"at most {len(shapes) * len(COLOURS)} concepts")
    pairs = [(s, c) for c in colours for s in shapes]
    random.Random("concepts:0").shuffle(pairs)
    return [{"name": name, "shape": s, "colour": c} for name, (s, c) in zip(invented_names(n), pairs[:n])]


def concept_weights(n: int, s: float) -> list[float]:
    return [1.0 / (rank + 1) ** s for rank in range(n)]


def build_world(st: Settings, concepts: list[dict], seed: int = 0):
    """(routes, rows, noisy paths): st.pool scenes, Zipf over concepts, st.noise mis-captioned."""
    rng = random.Random(f"tailworld:{seed}")
    weights = concept_weights(len(concepts), st.zipf_s)
    backgrounds = list(demo_web.BACKGROUNDS)
    routes, rows, noisy = {}, [], set()
    for i in range(st.pool):
        concept = rng.choices(concepts, weights)[0]
        bg = rng.choice(backgrounds)
        size = (rng.randint(64, 96), rng.randint(64, 96))
        body = demo_web.encode(demo_web.draw_scene(concept["shape"], concept["colour"], bg, size, rng), "JPEG")
        caption_of = concept
        path = f"/scene/{i:06d}.jpg"
        if rng.random() < st.noise:  # web noise: the alt-text of another scene
            caption_of = rng.choices(concepts, weights)[0]
            noisy.add(path)
        caption = rng.choice(CAPTIONS).format(name=caption_of["name"], bg=rng.choice(backgrounds))
        routes[path] = demo_web.Response(200, "image/jpeg", body)
        rows.append({"url": "{base}" + path, "caption": caption, "page_url": "{base}/page" + path})
    return routes, rows, noisy


def write_heldout(out_dir: str, concepts: list[dict], per_concept: int, seed: int = 99) -> str:
    """A concept-uniform labelled set (labels.csv; label = the concept's name), its own seed."""
    os.makedirs(out_dir, exist_ok=True)
    rng = random.Random(f"tailheldout:{seed}")
    lines = ["file,label"]
    for c in concepts:
        for i in range(per_concept):
            name = f"{c['name']}_{i:03d}.jpg"
            image = demo_web.draw_scene(c["shape"], c["colour"], rng.choice(list(demo_web.BACKGROUNDS)), (80, 80), rng)
            image.save(os.path.join(out_dir, name), quality=90)
            lines.append(f"{name},{c['name']}")
    with open(os.path.join(out_dir, "labels.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return out_dir


# ------------------------------------------------------------------ curation


def curate_sets(st: Settings, candidates: str, vocab: str) -> dict:
    root = os.path.join(st.out, "curated")
    matched = base.curate_into(os.path.join(root, "matched"), candidates, vocab, "--threshold", "1000000000")
    balanced = base.curate_into(os.path.join(root, "balanced"), candidates, vocab, "--threshold", str(st.threshold))
    size = balanced["funnel"]["kept"]
    base.subsample_shards(layout.shards_dir(os.path.join(root, "matched")),
                          layout.shards_dir(os.path.join(root, "unbalanced")), size, 0)
    shards = {v: layout.shards_dir(os.path.join(root, v)) for v in ("unbalanced", "balanced")}
    shards["online"] = layout.shards_dir(os.path.join(root, "matched"))
    return {"shards": shards, "size": size, "pool_kept": matched["funnel"]["kept"],
            "threshold": balanced["balancing"]["threshold"]}


def concept_counts(shards: str, concepts: list[dict]) -> list[int]:
    """Samples per concept (by the caption's matched entry ids), in rank order."""
    counts = [0] * len(concepts)
    for path in list_shards(shards):
        for ids in pq.read_table(path.replace(".tar", ".parquet"), columns=["entry_ids"]).column(0).to_pylist():
            for i in set(ids):
                counts[i] += 1
    return counts


def set_stats(st: Settings, counts: list[int]) -> dict:
    tail = counts[-st.tail:]
    return {"samples_by_concept": counts, "head_mean": statistics.mean(counts[: st.head]),
            "tail_mean": statistics.mean(tail), "tail_min": min(tail), "tail_max": max(tail)}


# ------------------------------------------------------------------ training and evaluation


def train_config(st: Settings, shards: str, checkpoint: str, seed: int, online_balance: int = 0) -> TrainConfig:
    values = {**OPTIMISER, **MODELS[st.model], **st.extra, "online_balance": online_balance}
    return TrainConfig(shards=shards, output=checkpoint, steps=st.steps, batch_size=st.batch_size, seed=seed,
                       device=st.device, log_every=max(1, st.steps // 4), **values)


def train_one(st: Settings, shards: str, checkpoint: str, seed: int, online_balance: int = 0) -> str:
    os.makedirs(os.path.dirname(checkpoint), exist_ok=True)
    return train(train_config(st, shards, checkpoint, seed, online_balance)).checkpoint


def train_and_evaluate(job: tuple) -> dict:
    """One (variant, seed) run: train, then zero-shot on the held-out set."""
    st, variant, seed, shards, online_balance = job
    if st.jobs > 1:
        import torch

        torch.set_num_threads(1)
    concepts = make_concepts(st.concepts)
    heldout = labelled_images(os.path.join(st.out, "heldout"))
    ckpt = train_one(st, shards, os.path.join(st.out, "runs", f"{variant}-{seed}.pt"), seed, online_balance)
    return {"seed": seed, **evaluate(st, ckpt, heldout, concepts)}


def evaluate(st: Settings, checkpoint: str, pairs: list, concepts: list[dict]) -> dict:
    model, cfg = load_checkpoint(checkpoint, st.device)
    model.eval()
    per_class = per_class_accuracy(zero_shot_predictions(model, cfg, pairs, templates=PROMPTS))
    names = [c["name"] for c in concepts]
    return {"uniform": statistics.mean(per_class[n] for n in names),
            "head": statistics.mean(per_class[n] for n in names[: st.head]),
            "tail": statistics.mean(per_class[n] for n in names[-st.tail:]),
            "per_concept": [per_class[n] for n in names]}


# ------------------------------------------------------------------ the paired test


# Student t 97.5% quantiles for 1..30 degrees of freedom (scipy.stats.t.ppf, 4 decimals; the
# test checks them against scipy where it is installed). openwit does not depend on scipy.
T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788,
        2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
        2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t975(df: int) -> float:
    """The two-sided 95% Student t quantile; above 30 df, its Cornish-Fisher expansion (< 1e-4 off)."""
    if df < 1:
        raise ValueError("a t-interval needs at least 2 paired seeds")
    if df <= len(T975):
        return T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def t_interval(diffs: list[float]) -> tuple[float, float]:
    """95% interval of the mean paired difference: mean ± t975(n-1) * sd / sqrt(n)."""
    n, mean = len(diffs), statistics.mean(diffs)
    half = t975(n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return (mean - half, mean + half)


def bootstrap_interval(diffs: list[float], resamples: int, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap of the mean, seeded."""
    rng = random.Random(f"bootstrap:{seed}")
    n = len(diffs)
    means = sorted(statistics.mean(rng.choices(diffs, k=n)) for _ in range(resamples))
    lo = means[int(math.floor((1 - level) / 2 * (resamples - 1)))]
    hi = means[int(math.ceil((1 + level) / 2 * (resamples - 1)))]
    return (lo, hi)


def paired(runs: dict, variant: str, resamples: int, against: str = "unbalanced") -> dict:
    """Per metric: the per-seed differences variant - against, their mean, sd and intervals."""
    ref = {r["seed"]: r for r in runs[against]}
    out = {}
    for m in METRICS:
        diffs = [r[m] - ref[r["seed"]][m] for r in runs[variant]]
        out[m] = {"diffs": diffs, "mean": statistics.mean(diffs),
                  "sd": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
                  "t95": t_interval(diffs) if len(diffs) > 1 else (math.nan, math.nan),
                  "boot95": bootstrap_interval(diffs, resamples),
                  "ahead": sum(d > 0 for d in diffs), "n": len(diffs)}
    return out


def verdict(test: dict) -> str:
    """The pre-registered reading of the uniform interval (docs/results.md)."""
    lo, hi = test["uniform"]["t95"]
    if lo > 0:
        return "supports"
    if hi < 0:
        return "refutes"
    return "inconclusive"


# ------------------------------------------------------------------ report


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def report_lines(report: dict) -> list[str]:
    st, runs = report["settings"], report["runs"]
    variants = list(runs)
    lines = [f"{st['concepts']} concepts (chance {100 / st['concepts']:.1f}%), head = {st['head']} most frequent, "
             f"tail = {st['tail']} least frequent; {st['steps']} steps x {st['batch_size']}; "
             f"model {st['model']}; seeds {st['seeds']}", "",
             "samples per concept in each set (mean over head / over tail [min-max]):"]
    for v in variants:
        d = report["data"][v]
        lines.append(f"  {v:<10} {sum(d['samples_by_concept']):>6} samples: head {d['head_mean']:.0f}, "
                     f"tail {d['tail_mean']:.1f} [{d['tail_min']}-{d['tail_max']}]")
    lines += ["", "zero-shot accuracy (%) per seed:", "",
              "| seed | " + " | ".join(f"{v} {m}" for v in variants for m in METRICS) + " |",
              "|---" * (1 + len(variants) * len(METRICS)) + "|"]
    for i, seed in enumerate(st["seeds"]):
        lines.append(f"| {seed} | " + " | ".join(pct(runs[v][i][m]) for v in variants for m in METRICS) + " |")
    lines.append("| mean | " + " | ".join(pct(statistics.mean(r[m] for r in runs[v])) for v in variants for m in METRICS) + " |")
    for v, test in report["paired"].items():
        lines += ["", f"{v} - unbalanced, paired by seed (points): verdict on uniform: {report['verdicts'][v]}", "",
                  "| metric | per-seed differences | mean | 95% t-interval | 95% bootstrap | seeds ahead |",
                  "|---|---|---|---|---|---|"]
        for m in METRICS:
            t = test[m]
            lines.append(f"| {m} | {', '.join(f'{100 * d:+.1f}' for d in t['diffs'])} | {100 * t['mean']:+.1f} | "
                         f"[{100 * t['t95'][0]:+.1f}, {100 * t['t95'][1]:+.1f}] | "
                         f"[{100 * t['boot95'][0]:+.1f}, {100 * t['boot95'][1]:+.1f}] | {t['ahead']}/{t['n']} |")
    return lines


# ------------------------------------------------------------------ main


def run(st: Settings) -> dict:
    started = time.perf_counter()
    os.makedirs(st.out, exist_ok=True)
    concepts = make_concepts(st.concepts)
    routes, rows, noisy = build_world(st, concepts)
    write_heldout(os.path.join(st.out, "heldout"), concepts, st.heldout_per_concept)
    with demo_web.serve(routes) as base_url:
        candidates = os.path.join(st.out, "candidates.parquet")
        pq.write_table(pa.Table.from_pylist(demo_web.rows_for(demo_web.DemoWeb(routes, rows), base_url)), candidates)
        vocab = os.path.join(st.out, "concepts.txt")
        with open(vocab, "w") as f:
            f.write("\n".join(c["name"] for c in concepts) + "\n")
        curated = curate_sets(st, candidates, vocab)
    curated_s = time.perf_counter() - started
    data = {v: set_stats(st, concept_counts(curated["shards"][v], concepts)) for v in st.variants}
    jobs = [(st, v, seed, curated["shards"][v], curated["threshold"] if v == "online" else 0)
            for seed in st.seeds for v in st.variants]
    if st.jobs > 1:  # one single-threaded process per core: no thread oversubscription on a busy CPU
        with ProcessPoolExecutor(st.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = list(pool.map(train_and_evaluate, jobs))
    else:
        rows = [train_and_evaluate(job) for job in jobs]
    runs = {v: [row for (_, variant, *_), row in zip(jobs, rows) if variant == v] for v in st.variants}
    tests = {v: paired(runs, v, st.bootstrap) for v in st.variants if v != "unbalanced"}
    report = {"settings": asdict(st) | {"seeds": list(st.seeds), "variants": list(st.variants)},
              "trainer": {k: v for k, v in asdict(train_config(st, "", "", 0)).items()
                          if k not in ("shards", "output", "seed")},
              "concepts": concepts, "curated": curated, "data": data, "runs": runs, "paired": tests,
              "verdicts": {v: verdict(t) for v, t in tests.items()},
              "seconds": {"world_and_curation": round(curated_s, 1), "total": round(time.perf_counter() - started, 1)}}
    return report


def settings_from_args(argv=None) -> tuple[Settings, str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = Settings()
    parser.add_argument("--concepts", type=int, default=d.concepts, help="at most 112 (16 shapes x 7 colours)")
    parser.add_argument("--pool", type=int, default=d.pool)
    parser.add_argument("--threshold", type=int, default=d.threshold, help="balancing t")
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--model", choices=sorted(MODELS), default=d.model, help="the size knob")
    parser.add_argument("--seeds", default=",".join(map(str, d.seeds)))
    parser.add_argument("--variants", default=",".join(d.variants), help=f"from {','.join(VARIANTS)}; unbalanced first")
    parser.add_argument("--heldout-per-concept", type=int, default=d.heldout_per_concept)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=d.device)
    parser.add_argument("--jobs", type=int, default=d.jobs, help="runs at once; on CPU each uses one thread")
    parser.add_argument("--out", default=d.out)
    parser.add_argument("--json", default="", help="also write the whole report here")
    parser.add_argument("--tiny", action="store_true", help="the plumbing only: 16 concepts, a few steps")
    a = parser.parse_args(argv)
    variants = tuple(a.variants.split(","))
    if variants[0] != "unbalanced" or not set(variants) <= set(VARIANTS):
        parser.error(f"--variants: unbalanced first, then some of {VARIANTS[1:]}")
    st = Settings(concepts=a.concepts, pool=a.pool, threshold=a.threshold, steps=a.steps, batch_size=a.batch_size,
                  model=a.model, seeds=tuple(int(x) for x in a.seeds.split(",")), variants=variants,
                  heldout_per_concept=a.heldout_per_concept, device=a.device, jobs=a.jobs, out=a.out)
    if a.tiny:
        st = Settings(concepts=16, pool=300, threshold=10, head=4, tail=4, steps=3, batch_size=16,
                      seeds=(0, 1), variants=variants, heldout_per_concept=2, jobs=a.jobs, out=a.out, bootstrap=200,
                      extra=dict(vision_width=32, vision_layers=1, vision_heads=2, text_width=32, text_layers=1,
                                 text_heads=2, embed_dim=32, warmup_steps=1))
    return st, a.json


def run_and_report(argv, settings_from_args, run, report_lines) -> dict:
    """An experiment's main: its settings, the run, the table printed and written to
    OUT/results.md, and the whole report to OUT/results.json (and --json)."""
    st, json_path = settings_from_args(argv)
    report = run(st)
    text = "\n".join(report_lines(report))
    print(text)
    print(f"\n{report['seconds']['total']:.0f} s in all ({report['seconds']['world_and_curation']:.0f} s world and curation)")
    with open(os.path.join(st.out, "results.md"), "w") as f:
        f.write(text + "\n")
    for path in filter(None, (os.path.join(st.out, "results.json"), json_path)):
        with open(path, "w") as f:
            json.dump(report, f, indent=1)
    return report


def main(argv=None) -> dict:
    return run_and_report(argv, settings_from_args, run, report_lines)


if __name__ == "__main__":
    main()
