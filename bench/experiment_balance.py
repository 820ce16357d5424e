"""Does curation move a model? Balanced vs unbalanced vs model-score-filtered vs online-balanced
training data at equal compute (issue 10; MetaCLIP's central comparison, in miniature).

The world: 16 concepts (shapes with distinct silhouettes), drawn in random colours on random
backgrounds, their frequencies Zipf-distributed (s = 1.3: the top concept ~29% of the pool,
the last ~0.8%). Captions name the shape, colour and background; 20% of pairs are web noise:
their caption describes another scene drawn from the same concept prior. The pool is served on
127.0.0.1 and curated by the real pipeline against a 16-entry list (the concept names):
- matched: matching only (the unbalanced pool);
- balanced: openwit's balancing with t from its own rule (--tail-fraction 0.06, MetaCLIP's
  ~6% tail);
- unbalanced: the matched pool subsampled (seeded) to the balanced set's size;
- scored: the matched pool filtered by `--score-model` (a tiny CLIP trained on the matched
  pool) with `--min-score` set so the kept count equals the balanced set's;
- online: the whole matched pool, balanced per epoch in the loader (--online-balance t).
Each variant trains the same tiny CLIP for the same steps x batch (equal samples seen) with
every seed, and is evaluated zero-shot on a concept-uniform held-out set, and on its head
(the 4 most frequent concepts) and tail (the 8 least frequent).

    python bench/experiment_balance.py [--pool 20000] [--steps 1500] [--seeds 0,1,2] [--out experiment_out]
    python bench/experiment_balance.py --device cuda --pool 200000 --steps 20000    (a GPU's setting)
    python bench/experiment_balance.py --tiny    (the plumbing only: what the test suite runs)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds

from openwit.pipeline.demo import web as demo_web
from openwit.pipeline.curate.run import curate
from openwit.pipeline.output import layout
from openwit.pipeline.output.ledger import current_state, read_ledger
from openwit.pipeline.config import parse_curate_args
from openwit.trainer.config import TrainConfig
from openwit.trainer.data import list_shards
from openwit.trainer.evaluate import labelled_images, per_class_accuracy, zero_shot_predictions
from openwit.trainer.model import load_checkpoint
from openwit.trainer.train import train

CONCEPTS = demo_web.SHAPES + demo_web.MORE_SHAPES
ZIPF_S, NOISE, TAIL_FRACTION = 1.3, 0.2, 0.06
HEAD, TAIL = CONCEPTS[:4], CONCEPTS[8:]
VARIANTS = ("unbalanced", "balanced", "scored", "online")


@dataclass
class Settings:
    pool: int = 20_000
    steps: int = 1500
    batch_size: int = 64
    seeds: tuple = (0, 1, 2)
    heldout_per_concept: int = 30
    out: str = "experiment_out"
    device: str = "cpu"


# ------------------------------------------------------------------ the world


def concept_weights() -> list[float]:
    return [1.0 / (rank + 1) ** ZIPF_S for rank in range(len(CONCEPTS))]


def scene_caption(rng: random.Random, shape: str) -> tuple[str, str, str]:
    color, bg = rng.choice(list(demo_web.COLORS)), rng.choice(list(demo_web.BACKGROUNDS))
    return color, bg, rng.choice(demo_web.TEMPLATES).format(color=color, shape=shape, bg=bg)


def build_world(n: int, seed: int = 0):
    """(routes, rows, noisy paths): n scenes, Zipf over concepts, NOISE of them mis-captioned."""
    rng = random.Random(f"world:{seed}")
    weights = concept_weights()
    routes, rows, noisy = {}, [], set()
    for i in range(n):
        shape = rng.choices(CONCEPTS, weights)[0]
        color, bg, caption = scene_caption(rng, shape)
        size = (rng.randint(64, 96), rng.randint(64, 96))
        body = demo_web.encode(demo_web.draw_scene(shape, color, bg, size, rng), "JPEG")
        path = f"/scene/{i:06d}.jpg"
        if rng.random() < NOISE:  # web noise: the alt-text of another scene
            caption = scene_caption(rng, rng.choices(CONCEPTS, weights)[0])[2]
            noisy.add(path)
        routes[path] = demo_web.Response(200, "image/jpeg", body)
        rows.append({"url": "{base}" + path, "caption": caption, "page_url": "{base}/page" + path})
    return routes, rows, noisy


def write_heldout(out_dir: str, per_concept: int, seed: int = 99) -> str:
    """A concept-uniform labelled set (labels.csv), drawn with its own seed."""
    os.makedirs(out_dir, exist_ok=True)
    rng = random.Random(f"heldout:{seed}")
    lines = ["file,label"]
    for shape in CONCEPTS:
        for i in range(per_concept):
            color, bg = rng.choice(list(demo_web.COLORS)), rng.choice(list(demo_web.BACKGROUNDS))
            name = f"{shape}_{i:03d}.jpg"
            demo_web.draw_scene(shape, color, bg, (80, 80), rng).save(os.path.join(out_dir, name), quality=90)
            lines.append(f"{name},{shape}")
    with open(os.path.join(out_dir, "labels.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return out_dir


# ------------------------------------------------------------------ curation


def curate_into(out: str, candidates: str, vocab: str, *extra: str) -> dict:
    argv = ["--input", candidates, "--vocab", vocab, "--output", out, "--allow-loopback",
            "--languages", "all", "--min-image-size", "48", "--image-size", "48", "--resize-mode", "center_crop",
            # flat drawings of one shape look alike in a 64-bit pHash: exact duplicates only
            "--near-dup-distance", "-1", "--samples-per-shard", "500", "--timeout", "10", "--retries", "1",
            "--per-host-connections", "64", "--overwrite", *extra]
    cfg, beam_args = parse_curate_args(argv)
    return curate(cfg, beam_args, argv)


def kept_rows(out: str) -> list[dict]:
    return [r for r in current_state(read_ledger(out)).to_pylist() if r["status"] == "kept"]


def subsample_shards(source: str, target: str, n: int, seed: int) -> None:
    """n samples of source's shards, chosen by a seeded draw, rewritten as shards (with indexes)."""
    samples = list(wds.DataPipeline(wds.SimpleShardList(list_shards(source)), wds.tarfile_to_samples()))
    chosen = sorted(random.Random(f"subsample:{seed}").sample(range(len(samples)), n))
    index = {row["key"]: row for path in list_shards(source)
             for row in pq.read_table(path.replace(".tar", ".parquet")).to_pylist()}
    os.makedirs(target, exist_ok=True)
    per_shard = 500
    for shard, start in enumerate(range(0, n, per_shard)):
        part = [samples[i] for i in chosen[start:start + per_shard]]
        with wds.TarWriter(os.path.join(target, f"{shard:05d}.tar")) as sink:
            for sample in part:
                sink.write({k: v for k, v in sample.items() if k in ("__key__", "jpg", "txt", "json")})
        pq.write_table(pa.Table.from_pylist([index[s["__key__"]] for s in part]),
                       os.path.join(target, f"{shard:05d}.parquet"))


def curate_variants(s: Settings, candidates: str, vocab: str) -> dict:
    """Shard directories per variant, plus what the comparison needs to know about them."""
    root = os.path.join(s.out, "curated")
    matched = curate_into(os.path.join(root, "matched"), candidates, vocab, "--threshold", "1000000000")
    balanced = curate_into(os.path.join(root, "balanced"), candidates, vocab, "--tail-fraction", str(TAIL_FRACTION))
    size, t = balanced["funnel"]["kept"], balanced["balancing"]["threshold"]
    subsample_shards(layout.shards_dir(os.path.join(root, "matched")), layout.shards_dir(os.path.join(root, "unbalanced")), size, 0)
    scorer = train_one(s, layout.shards_dir(os.path.join(root, "matched")), os.path.join(s.out, "scorer.pt"), seed=100)
    recorded = os.path.join(root, "scores")
    curate_into(recorded, candidates, vocab, "--threshold", "1000000000", "--score-model", scorer)
    scores = sorted((r["clip_score"] for r in kept_rows(recorded)), reverse=True)
    cut = scores[min(size, len(scores)) - 1]
    curate_into(os.path.join(root, "scored"), candidates, vocab, "--threshold", "1000000000",
                "--score-model", scorer, "--min-score", f"{cut:.6f}")
    shards = {v: layout.shards_dir(os.path.join(root, v)) for v in ("unbalanced", "balanced", "scored")}
    shards["online"] = layout.shards_dir(os.path.join(root, "matched"))
    return {"shards": shards, "threshold": t, "size": size, "pool_kept": matched["funnel"]["kept"],
            "min_score": cut}


# ------------------------------------------------------------------ training and evaluation


def train_one(s: Settings, shards: str, checkpoint: str, seed: int, online_balance: int = 0) -> str:
    os.makedirs(os.path.dirname(checkpoint), exist_ok=True)
    cfg = TrainConfig(shards=shards, output=checkpoint, steps=s.steps, batch_size=s.batch_size, seed=seed,
                      log_every=max(1, s.steps // 5), online_balance=online_balance, device=s.device,
                      context_length=77)  # as docs/results.md measured it (the default is now 160)
    return train(cfg).checkpoint


def evaluate(checkpoint: str, pairs: list) -> dict:
    model, cfg = load_checkpoint(checkpoint)
    per_class = per_class_accuracy(zero_shot_predictions(model, cfg, pairs))
    return {"uniform": statistics.mean(per_class.values()),
            "head": statistics.mean(per_class[c] for c in HEAD),
            "tail": statistics.mean(per_class[c] for c in TAIL)}


def data_stats(shards: str, noisy: set, online_threshold: int = 0) -> dict:
    """Samples, noisy share, and the tail concepts' share of the samples (by caption's entries)."""
    rows = [row for path in list_shards(shards) for row in pq.read_table(path.replace(".tar", ".parquet")).to_pylist()]
    tail_ids = {CONCEPTS.index(c) for c in TAIL}
    in_tail = sum(1 for r in rows if set(r["entry_ids"]) & tail_ids)
    noise = sum(1 for r in rows if "/scene/" + r["url"].split("/scene/")[1] in noisy)
    return {"samples": len(rows), "noisy": noise / len(rows), "tail_share": in_tail / len(rows),
            "online_threshold": online_threshold or None}


# ------------------------------------------------------------------ report


def summarize(results: dict) -> dict:
    """variant -> metric -> (mean, std over seeds)."""
    out = {}
    for variant, runs in results.items():
        out[variant] = {m: (statistics.mean(r[m] for r in runs),
                            statistics.stdev(r[m] for r in runs) if len(runs) > 1 else 0.0)  # sample std (n - 1)
                        for m in ("uniform", "head", "tail")}
    return out


def table(summary: dict, stats: dict, seeds) -> str:
    lines = [f"zero-shot accuracy, mean ± std over seeds {list(seeds)} (chance {1 / len(CONCEPTS):.1%})", "",
             "| variant | samples | noisy pairs | tail-concept share | uniform | head (4) | tail (8) |",
             "|---|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        st, acc = stats[variant], summary[variant]
        cells = [f"{acc[m][0]:.1%} ± {acc[m][1]:.1%}" for m in ("uniform", "head", "tail")]
        samples = f"{st['samples']:,}" + (" (per epoch: balanced online)" if variant == "online" else "")
        lines.append(f"| {variant} | {samples} | {st['noisy']:.1%} | {st['tail_share']:.1%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_lines(results: dict) -> list[str]:
    """Each variant against unbalanced, seed by seed (same seed = same init and data order
    rule): the mean difference in points, and in how many seeds it was ahead."""
    base = {r["seed"]: r for r in results["unbalanced"]}
    lines = ["", "paired by seed, against unbalanced (points; seeds ahead):"]
    for variant in VARIANTS[1:]:
        cells = []
        for m in ("uniform", "head", "tail"):
            diffs = [r[m] - base[r["seed"]][m] for r in results[variant]]
            cells.append(f"{m} {100 * statistics.mean(diffs):+.1f} ({sum(d > 0 for d in diffs)}/{len(diffs)})")
        lines.append(f"  {variant:<10} " + ", ".join(cells))
    return lines


def bar_chart_svg(summary: dict) -> str:
    """Grouped bars (uniform, head, tail) per variant with ±std whiskers, inline SVG."""
    colors = {"uniform": "#4c72b0", "head": "#dd8452", "tail": "#55a868"}
    width, height, left, bottom, group = 640, 300, 50, 40, 140
    bars = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
            f'<text x="{left}" y="16">zero-shot accuracy by training set (mean ± std over seeds)</text>']
    highest = max(mean + std for per_metric in summary.values() for mean, std in per_metric.values())
    top = next(q for q in (0.25, 0.5, 0.75, 1.0) if q >= highest)
    scale = (height - bottom - 30) / top
    for tick in (top * i / 5 for i in range(6)):
        y = height - bottom - tick * scale
        bars.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                    f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{tick:.0%}</text>')
    chance = height - bottom - scale / len(CONCEPTS)
    bars.append(f'<line x1="{left}" x2="{width - 10}" y1="{chance:.1f}" y2="{chance:.1f}" stroke="#888" '
                f'stroke-dasharray="4 3"/><text x="{width - 12}" y="{chance - 4:.1f}" text-anchor="end">chance</text>')
    for g, variant in enumerate(VARIANTS):
        x0 = left + 15 + g * group
        for b, metric in enumerate(("uniform", "head", "tail")):
            mean, std = summary[variant][metric]
            x, y = x0 + b * 34, height - bottom - mean * scale
            bars.append(f'<rect x="{x}" y="{y:.1f}" width="30" height="{mean * scale:.1f}" fill="{colors[metric]}"/>'
                        f'<line x1="{x + 15}" x2="{x + 15}" y1="{y - std * scale:.1f}" y2="{y + std * scale:.1f}" stroke="black"/>')
        bars.append(f'<text x="{x0 + 50}" y="{height - bottom + 16}" text-anchor="middle">{variant}</text>')
    for i, metric in enumerate(colors):
        bars.append(f'<rect x="{left + 300 + i * 90}" y="{height - 14}" width="10" height="10" fill="{colors[metric]}"/>'
                    f'<text x="{left + 314 + i * 90}" y="{height - 5}">{metric}</text>')
    return "\n".join(bars + ["</svg>"])


# ------------------------------------------------------------------ main


def run(s: Settings) -> dict:
    started = time.perf_counter()
    os.makedirs(s.out, exist_ok=True)
    routes, rows, noisy = build_world(s.pool)
    heldout = labelled_images(write_heldout(os.path.join(s.out, "heldout"), s.heldout_per_concept))
    with demo_web.serve(routes) as base_url:
        candidates = os.path.join(s.out, "candidates.parquet")
        pq.write_table(pa.Table.from_pylist(demo_web.rows_for(demo_web.DemoWeb(routes, rows), base_url)), candidates)
        vocab = os.path.join(s.out, "concepts.txt")
        with open(vocab, "w") as f:
            f.write("\n".join(CONCEPTS) + "\n")
        curated = curate_variants(s, candidates, vocab)
    stats = {v: data_stats(curated["shards"][v], noisy) for v in VARIANTS}
    results = {v: [] for v in VARIANTS}
    for seed in s.seeds:
        for variant in VARIANTS:
            online = curated["threshold"] if variant == "online" else 0
            checkpoint = train_one(s, curated["shards"][variant], os.path.join(s.out, "runs", f"{variant}-{seed}.pt"),
                                   seed, online)
            results[variant].append({"seed": seed, **evaluate(checkpoint, heldout)})
    summary = summarize(results)
    report = {"settings": vars(s) | {"seeds": list(s.seeds)}, "curated": curated, "data": stats, "runs": results,
              "summary": summary, "seconds": round(time.perf_counter() - started, 1)}
    with open(os.path.join(s.out, "results.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(s.out, "results.md"), "w") as f:
        f.write("\n".join([table(summary, stats, s.seeds), *paired_lines(results)]) + "\n")
    with open(os.path.join(s.out, "results.svg"), "w") as f:
        f.write(bar_chart_svg(summary))
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=Settings.pool)
    parser.add_argument("--steps", type=int, default=Settings.steps)
    parser.add_argument("--batch-size", type=int, default=Settings.batch_size)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--heldout-per-concept", type=int, default=Settings.heldout_per_concept)
    parser.add_argument("--out", default=Settings.out)
    parser.add_argument("--device", default="cpu", help="cuda for the bigger setting, e.g. --pool 200000 --steps 20000")
    parser.add_argument("--tiny", action="store_true", help="a few hundred pairs and steps: the plumbing only")
    args = parser.parse_args(argv)
    s = Settings(args.pool, args.steps, args.batch_size, tuple(int(x) for x in args.seeds.split(",")),
                 args.heldout_per_concept, args.out, args.device)
    if args.tiny:
        s = Settings(pool=600, steps=6, batch_size=16, seeds=(0,), heldout_per_concept=2, out=args.out)
    report = run(s)
    c = report["curated"]
    print(f"\npool {s.pool:,} pairs -> matched {c['pool_kept']:,}; balanced t = {c['threshold']} "
          f"-> {c['size']:,} samples; score cut {c['min_score']:.4f}; {s.steps} steps x {s.batch_size} per run; "
          f"{report['seconds']:.0f} s in all\n")
    print(table(report["summary"], report["data"], s.seeds))
    print("\n".join(paired_lines(report["runs"])))
    print(f"\nwritten: {os.path.join(s.out, 'results.md')}, results.json, results.svg", file=sys.stderr)


if __name__ == "__main__":
    main()
