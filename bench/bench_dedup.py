"""Near-duplicate search on synthetic 64-bit hashes with planted clusters (issue 6).

The kernel (neardup.near_duplicate_pairs, the pure function the Beam stage distributes) is
timed at 100K, 300K and 1M hashes against the anchor: an all-pairs search, timed on a
20K sample in the same run and extrapolated by n^2. Each size runs in a fresh process so
its peak memory is its own. Recall is checked against the planted truth (every planted
copy within k must be found). Also: the Beam form on 100K hashes (FnApiRunner), and
fastText language ID throughput. The colour check (issue 26) is timed on every size's found
pairs (what it costs per pHash-verified pair).

    python bench/bench_dedup.py [--sizes 100000,300000,1000000] [--k 4] [--also-k 8]
    python bench/bench_dedup.py --colour   # precision/recall of pHash alone vs pHash + colour
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os

import subprocess
import sys
import tempfile
import time

import numpy as np

from openwit.pipeline.common.memory import peak_rss_bytes
from openwit.pipeline.common import neardup
from openwit.pipeline.common.neardup import near_duplicate_pairs, pairs_within

GOAL_SECONDS = 60.0  # 1M hashes at k = 4 on 2 cores


def planted(n: int, k: int, seed: int = 0):
    """(unique hashes, planted (base, copy) value pairs within k). 80% of n are random
    bases; each of the other 20% is a copy of a base with 1..k bits flipped, some bases
    getting several copies (a cluster)."""
    rng = np.random.default_rng(seed)
    bases = rng.integers(0, 2**64 - 1, size=int(n * 0.8), dtype=np.uint64, endpoint=True)
    parents = bases[rng.integers(0, len(bases) // 4, size=n - len(bases))]
    flips = np.zeros(len(parents), dtype=np.uint64)
    counts = rng.integers(1, k + 1, size=len(parents))
    for step in range(k):
        bits = rng.integers(0, 64, size=len(parents)).astype(np.uint64)
        flips ^= np.where(counts > step, np.uint64(1) << bits, np.uint64(0))  # a repeated bit cancels: fewer flips
    copies = parents ^ flips
    return np.unique(np.concatenate([bases, copies])), np.stack([parents, copies], axis=1)


def recall(hashes: np.ndarray, pairs: np.ndarray, truth: np.ndarray) -> float:
    found = {(int(a), int(b)) for a, b in np.sort(hashes[pairs], axis=1)} if len(pairs) else set()
    wanted = {tuple(sorted((int(a), int(b)))) for a, b in truth if a != b}
    return len(wanted & found) / max(1, len(wanted))


def one_size(n: int, k: int) -> dict:
    """Run in a child process: time the kernel on n planted hashes."""
    hashes, truth = planted(n, k)
    stats = {}
    start = time.perf_counter()
    pairs = near_duplicate_pairs(hashes, k, stats=stats)
    seconds = time.perf_counter() - start
    peak_mib = peak_rss_bytes() / 2**20
    return {"n": len(hashes), "k": k, "seconds": seconds, "pairs": len(pairs), "compared": stats["compared"],
            "recall": recall(hashes, pairs, truth), "peak_mib": peak_mib, "colour_ns": colour_check_ns(pairs)}


def colour_check_ns(pairs: np.ndarray) -> float:
    """Nanoseconds per found pair of the second check (colour distance under the limit), on
    random 4x4 Lab signatures for the pairs' hashes (only those are materialised)."""
    if len(pairs) == 0:
        return math.nan
    items, local = np.unique(pairs, return_inverse=True)
    rng = np.random.default_rng(2)
    colours = rng.uniform(0, 100, size=(len(items), 16, 3)).astype(np.float32)
    start = time.perf_counter()
    neardup.colour_checked_pairs(local.reshape(pairs.shape), colours)
    return (time.perf_counter() - start) / len(pairs) * 1e9


def in_child(n: int, k: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", f"{n},{k}"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def all_pairs_rate(k: int, sample: int = 20_000) -> float:
    """Pair comparisons per second of the all-pairs baseline, measured on a sample."""
    hashes, _ = planted(sample, k, seed=1)
    start = time.perf_counter()
    pairs_within(hashes, np.arange(len(hashes)), k)
    return len(hashes) * (len(hashes) - 1) / 2 / (time.perf_counter() - start)


def growth_exponent(rows: list[dict]) -> float:
    x = np.log([r["n"] for r in rows])
    y = np.log([r["seconds"] for r in rows])
    return float(np.polyfit(x, y, 1)[0])


def bench_colour(h: str) -> str:
    """A colour signature for a bench record, one of four flat colours picked by the pHash's
    first hex digit: a planted copy with a flipped top bit differs in colour (a veto)."""
    lightness = 20 + 20 * (int(h[0], 16) % 4)
    return bytes([round(lightness * 2.55), 128, 128] * 16).hex()


def beam_form(n: int, k: int) -> tuple[float, int, int]:
    """(seconds, records kept, star clusters by the kernel) for near_dedup on FnApiRunner.
    Every record is 256x256, so survivor order is uid order = pHash order; records carry
    `bench_colour` signatures, so the stars are the combined rule's."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from openwit.pipeline.beam.graph import near_dedup
    from openwit.pipeline.common.neardup import near_duplicate_stars
    from openwit.schemas.record import Record

    hashes, _ = planted(n, k)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "hashes.txt")
        with open(path, "w") as f:
            f.writelines(f"{int(h):016x}\n" for h in hashes)
        p = beam.Pipeline(options=PipelineOptions(["--runner", "FnApiRunner", "--direct_running_mode", "in_memory"]))
        records = (
            p
            | beam.io.ReadFromText(path)
            | beam.Map(lambda h: Record(uid=h, url=f"http://127.0.0.1/{h}", caption="x", source="bench",
                                        phash=h, colour_sig=bench_colour(h), original_width=256,
                                        original_height=256))
        )
        kept, _ = near_dedup(records, k)
        _ = kept | beam.combiners.Count.Globally() | beam.io.WriteToText(os.path.join(tmp, "kept"))
        start = time.perf_counter()
        p.run().wait_until_finish()
        seconds = time.perf_counter() - start
        with open(os.path.join(tmp, "kept-00000-of-00001")) as f:
            kept_count = int(f.read())
    values = np.unique(hashes)
    colours = neardup.colour_values(bench_colour(f"{int(h):016x}") for h in values)
    return seconds, kept_count, len(np.unique(near_duplicate_stars(values, k, colours=colours)))


def lid_rate(n: int = 20_000) -> float:
    from openwit.pipeline.stages.text import detect_language, load_lid_model

    fixture = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "lid_sentences.tsv")
    with open(fixture, encoding="utf-8") as f:
        sentences = [line.split("\t")[1].strip() for line in f if "\t" in line and not line.startswith("#")]
    # alt-text-sized pieces: 3 to 12 words of the fixture sentences
    rng = np.random.default_rng(0)
    captions = []
    for _ in range(n):
        words = sentences[rng.integers(len(sentences))].split()
        start = int(rng.integers(0, max(1, len(words) - 3)))
        captions.append(" ".join(words[start:start + int(rng.integers(3, 13))]))
    model = load_lid_model()
    start = time.perf_counter()
    for caption in captions:
        detect_language(model, caption)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,300000,1000000")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--also-k", type=int, default=8, help="a second k to report (openwit's default); -1: none")
    parser.add_argument("--beam-size", type=int, default=100_000)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--colour", action="store_true", help="only the colour check's precision/recall and costs")
    args = parser.parse_args()
    if args.colour:
        colour_report(args.also_k if args.also_k >= 0 else 8)
        return
    if args.one:
        n, k = (int(v) for v in args.one.split(","))
        print(json.dumps(one_size(n, k)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"near-duplicate kernel vs all-pairs anchor (k = {args.k}; anchor timed on 20K and scaled by n^2)")
    print(f"{'k':>3} {'hashes':>9} {'seconds':>8} {'all-pairs s':>12} {'speed-up':>9} {'pairs verified':>15} "
          f"{'all pairs':>10} {'pairs found':>12} {'recall':>7} {'peak MiB':>9} {'colour ns/pair':>15}")
    results = {}
    for k in [args.k] + ([args.also_k] if args.also_k >= 0 else []):
        rate = all_pairs_rate(k)
        rows = [in_child(n, k) for n in sizes]
        results[k] = rows
        for r in rows:
            brute = r["n"] * (r["n"] - 1) / 2 / rate
            all_pairs = r["n"] * (r["n"] - 1) / 2
            print(f"{k:>3} {r['n']:>9,} {r['seconds']:>8.2f} {brute:>12,.0f} {brute / r['seconds']:>8,.0f}x "
                  f"{r['compared']:>15,} {all_pairs:>10.1e} {r['pairs']:>12,} {r['recall']:>7.1%} {r['peak_mib']:>9,.0f} "
                  f"{r['colour_ns']:>15,.0f}")
        if len(rows) > 1:
            print(f"    k = {k}: fitted growth exponent {growth_exponent(rows):.2f} (time ~ n^x; all-pairs is 2)")
    largest = results[args.k][-1]
    ok = largest["seconds"] < GOAL_SECONDS and all(r["recall"] == 1.0 for rows in results.values() for r in rows)
    print(f"goal: {largest['n']:,} hashes at k = {args.k} in < {GOAL_SECONDS:.0f} s with 100% recall: "
          f"{'PASS' if ok else 'FAIL'} ({largest['seconds']:.1f} s)")
    seconds, kept, clusters = beam_form(args.beam_size, args.k)
    kernel = next((r["seconds"] for r in results[args.k] if abs(r["n"] - args.beam_size) < args.beam_size * 0.1),
                  math.nan)
    print(f"Beam form (FnApiRunner in_memory, {args.beam_size:,} hashes, k = {args.k}): {seconds:.1f} s, "
          f"kept {kept:,} = kernel star clusters {clusters:,}: {'PASS' if kept == clusters else 'FAIL'}; "
          f"kernel alone {kernel:.2f} s")
    print(f"language ID (fastText lid.176, alt-text-sized captions): {lid_rate():,.0f} captions/s on one core")


# --- the colour check (issue 26): measured on planted flat graphics and photos -------------

def planted_images(hues: int, chroma: float, photos: int) -> list[tuple[int, str, bytes]]:
    """(source id, copy name, bytes): tests/flat_graphics.py's distinct flat graphics (equal
    luminance, other hues) with their copies, then photo-like scenes with theirs."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from flat_graphics import copies, members
    from scenes import jpeg, scene

    from PIL import Image

    out = [(g, name, data) for g, (_, image) in enumerate(members(hues, chroma)) for name, data in copies(image)]
    for seed in range(photos):
        image = scene(seed)
        out.append((10_000 + seed, "original jpeg q95", jpeg(image, 95)))
        for size, quality in [((200, 150), 75), ((120, 90), 60), ((640, 480), 90), ((300, 225), 40)]:
            out.append((10_000 + seed, f"{size[0]}x{size[1]} q{quality}", jpeg(image.resize(size, Image.LANCZOS), quality)))
    return out


def rule_scores(source, hashes, colours, k: int, limit: float) -> dict:
    """Pair precision/recall of pHash alone and pHash + colour, and distinct sources that
    share a star (survivor order: the input order)."""
    same = source[:, None] == source[None, :]
    upper = np.triu(np.ones_like(same), 1)
    phash = np.bitwise_count(hashes[:, None] ^ hashes[None, :]) <= k
    colour = neardup.colour_close(neardup.colour_distances(colours[:, None], colours[None, :]), limit)
    scores = {}
    for name, rule, centre in [
            ("pHash alone", phash, neardup.near_duplicate_stars(hashes, k, colours=colours, max_colour=math.inf)),
            ("pHash + colour", phash & colour, neardup.near_duplicate_stars(hashes, k, colours=colours,
                                                                           max_colour=limit))]:
        found, truth = rule & upper, same & upper
        scores[name] = {"precision": (found & truth).sum() / max(1, found.sum()),
                        "recall": (found & truth).sum() / max(1, truth.sum()),
                        "false pairs": int((found & ~truth).sum()), "true pairs": int(truth.sum()),
                        "sources merged": int((source[centre] != source).sum())}
    return scores


def colour_report(k: int) -> None:
    from PIL import Image

    from openwit.pipeline.stages.image import ImageConfig, image_colour_signature, process_image

    cfg = ImageConfig(min_image_size=0)
    limit = neardup.DEFAULT_COLOUR_DISTANCE
    print(f"pair precision / recall at k = {k}, colour limit {limit} (largest per-cell CIELAB distance, 4x4)")
    for label, hues, chroma, photos in [("flat, 6 hues 60 deg apart, chroma 0.9", 6, 0.9, 0),
                                        ("flat, 12 hues 30 deg apart, chroma 0.5", 12, 0.5, 0),
                                        ("photo-like scenes, 5 copies each", 1, 0.9, 220)]:
        images = planted_images(hues, chroma, photos)
        if photos:
            images = [i for i in images if i[0] >= 10_000]
        source = np.array([i[0] for i in images])
        hashes = np.array([int(process_image(i[2], cfg).phash, 16) for i in images], dtype=np.uint64)
        signatures, seconds = [], {}
        for _, name, data in images:
            start = time.perf_counter()
            signatures.append(image_colour_signature(data, cfg))
            fmt = Image.open(io.BytesIO(data)).format
            seconds.setdefault(fmt, []).append(time.perf_counter() - start)
        for name, s in rule_scores(source, hashes, neardup.colour_values(signatures), k, limit).items():
            print(f"  {label} ({len(images)} images, {s['true pairs']:,} true pairs): {name:<15} precision "
                  f"{s['precision']:.1%} recall {s['recall']:.1%} false pairs {s['false pairs']:,} "
                  f"images in another source's star {s['sources merged']}")
        print("    colour signature per image, ms: " + ", ".join(
            f"{fmt} {1000 * np.median(v):.2f}" for fmt, v in sorted(seconds.items())))


if __name__ == "__main__":
    main()
