"""The whole `openwit curate` pipeline at growing sizes: wall time and peak memory (issue 9).

A local aiohttp server (a separate process, 127.0.0.1 only) makes a distinct small JPEG for
every URL on the fly, with faults mixed in: 2% 404, 1% 500, 1% truncated bodies, 0.2% never
answer. Candidates carry English captions over Zipf-drawn entries of the shipped vocabulary;
5% repeat another row's URL and 2% point at another row's image under a new URL, so URL,
exact and near dedup all have work. Each size runs in its own process (FnApiRunner
in_memory: the whole pipeline in that one process), which reports its peak RSS.

Verdicts: memory grows by at most 2 KB per candidate between the smallest and the largest
size (metadata, not images), and time grows about linearly (the marginal time per candidate
of the last step is at most 1.5x that of the first step).

    python bench/bench_pipeline.py [--sizes 10000,30000,100000]
    python bench/bench_pipeline.py --progress-overhead 5000 [--rounds 3]

`--progress-overhead N` runs N candidates with the progress display off (--quiet) and on
(plain lines every 5 s and the JSON counters, as off a terminal), alternating, and prints
each round and the ratio of the medians (issue 25: no measurable slowdown).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

import local_server  # bench/local_server.py: this script's directory is on sys.path

MAX_BYTES_PER_CANDIDATE = 2048
MAX_MARGINAL_TIME_RATIO = 1.5
FILLERS = ["a photo of the", "close up of a", "my new", "the old", "picture of a small", "view of the big"]


def make_jpeg(index: int) -> bytes:
    """A distinct 240x200 JPEG per index: a colour gradient plus seeded blocks (so pHashes differ)."""
    rng = np.random.default_rng(index)
    blocks = rng.integers(0, 255, (5, 6, 3), dtype=np.uint8)
    pixels = np.kron(blocks, np.ones((40, 40, 1), dtype=np.uint8))
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=80)
    return out.getvalue()


def fault_of(index: int) -> str:
    if index % 500 == 250:
        return "hang"
    return {7: "404", 33: "404", 51: "500", 90: "truncated"}.get(index % 100, "ok")


def write_candidates(path: str, n: int, base_url: str, entries: list[str]) -> None:
    rng = np.random.default_rng(n)
    ranks = np.minimum(rng.zipf(1.5, size=2 * n), len(entries)) - 1
    rows = []
    for i in range(n):
        image = i
        if i % 50 == 13:  # another row's image under a new URL: an exact duplicate after download
            image = i - 13
        url = f"{base_url}/img/{image}.jpg?v={i}" if image != i else f"{base_url}/img/{i}.jpg"
        if i % 20 == 11:  # the same URL as an earlier row, from another page
            url = f"{base_url}/img/{i - 11}.jpg"
        caption = f"{FILLERS[i % len(FILLERS)]} {entries[ranks[2 * i]]} and {entries[ranks[2 * i + 1]]}"
        rows.append({"url": url, "caption": caption, "page_url": f"{base_url}/page/{i}"})
    pq.write_table(pa.Table.from_pylist(rows), path)


def english_entries(limit: int = 20000) -> list[str]:
    """Plain lower-case single words from the shipped list: captions stay English for the LID."""
    from openwit.pipeline.stages.match import read_vocab
    from openwit.query_lists.build import shipped_list_path

    words = [e for e in read_vocab(shipped_list_path()) if e.isascii() and e.isalpha() and e.islower() and len(e) > 3]
    return words[:limit]


def child(candidates: str, out: str, shown: str = "off") -> None:
    """One curate run; prints its seconds, peak RSS and funnel as JSON."""
    from openwit.pipeline.common import progress
    from openwit.pipeline.common.memory import peak_rss_bytes
    from openwit.pipeline.curate.run import curate
    from openwit.pipeline.config import parse_curate_args

    argv = ["--input", candidates, "--output", out, "--threshold", "2000", "--image-size", "64",
            "--timeout", "2", "--retries", "0", "--allow-loopback", "--per-host-connections", "64",
            "--samples-per-shard", "2000", "--ledger-parts", "8", "--direct_running_mode", "in_memory"]
    cfg, beam_args = parse_curate_args(argv)
    start = time.perf_counter()
    show = progress.Options(quiet=False, every=5, json_path=out + "-progress.json") if shown == "on" else None
    manifest = curate(cfg, beam_args, argv, show)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_bytes": peak_rss_bytes(), "funnel": manifest["funnel"]}))


def run_size(n: int, base_url: str, entries: list[str], root: str, shown: str = "off", tag: str = "") -> dict:
    candidates = os.path.join(root, f"candidates-{n}.parquet")
    if not os.path.exists(candidates):
        write_candidates(candidates, n, base_url, entries)
    out = os.path.join(root, f"out-{n}{tag}")
    result = subprocess.run([sys.executable, __file__, "--child", candidates, out, shown],
                            check=True, capture_output=True, text=True)
    return {"candidates": n, **json.loads(result.stdout.strip().splitlines()[-1])}


def progress_overhead(n: int, rounds: int, base_url: str, entries: list[str]) -> None:
    """Alternating runs without and with the progress display; the medians' ratio."""
    times = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as root:
        for i in range(rounds):
            for shown in ("off", "on"):
                times[shown].append(run_size(n, base_url, entries, root, shown, f"-{shown}{i}")["seconds"])
                print(f"  round {i + 1} progress {shown}: {times[shown][-1]:.1f} s", file=sys.stderr)
    print(f"{'progress':>8} " + " ".join(f"{'run ' + str(i + 1):>7}" for i in range(rounds)) + f" {'median':>7}")
    for shown, values in times.items():
        print(f"{shown:>8} " + " ".join(f"{v:>7.1f}" for v in values) + f" {statistics.median(values):>7.1f}")
    ratio = statistics.median(times["on"]) / statistics.median(times["off"])
    spread = max(max(v) / min(v) for v in times.values())
    print(f"\nmedian with progress / without: {ratio:.3f} (run-to-run spread up to {spread:.2f}x)")


def verdicts(rows: list[dict]) -> dict:
    first, last = rows[0], rows[-1]
    per_candidate_bytes = (last["peak_bytes"] - first["peak_bytes"]) / (last["candidates"] - first["candidates"])
    slopes = [(b["seconds"] - a["seconds"]) / (b["candidates"] - a["candidates"]) for a, b in zip(rows, rows[1:])]
    return {"bytes_per_candidate": per_candidate_bytes, "time_ratio": slopes[-1] / slopes[0] if len(slopes) > 1 else 1.0}


def print_table(rows: list[dict]) -> None:
    print(f"{'candidates':>10} {'kept':>7} {'seconds':>8} {'cand/s':>7} {'peak RSS MiB':>12} {'RSS/cand':>9} {'x time of first':>15}")
    for row in rows:
        print(f"{row['candidates']:>10,} {row['funnel']['kept']:>7,} {row['seconds']:>8.1f} "
              f"{row['candidates'] / row['seconds']:>7.0f} {row['peak_bytes'] / 2**20:>12.0f} "
              f"{row['peak_bytes'] / row['candidates']:>8.0f}B {row['seconds'] / rows[0]['seconds']:>15.2f}")
    if len(rows) < 2:  # the verdicts compare sizes
        return
    v = verdicts(rows)
    memory_ok = v["bytes_per_candidate"] <= MAX_BYTES_PER_CANDIDATE
    time_ok = v["time_ratio"] <= MAX_MARGINAL_TIME_RATIO
    print(f"\nmemory growth {v['bytes_per_candidate']:.0f} B per candidate (goal <= {MAX_BYTES_PER_CANDIDATE}): "
          f"{'PASS' if memory_ok else 'FAIL'}")
    print(f"marginal time per candidate, last step / first step {v['time_ratio']:.2f} "
          f"(goal <= {MAX_MARGINAL_TIME_RATIO}): {'PASS' if time_ok else 'FAIL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,30000,100000")
    parser.add_argument("--progress-overhead", type=int, metavar="N", help="progress on vs off at N candidates")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", metavar="DIR", help="write candidates and outputs under DIR and keep them "
                        "(e.g. for `openwit audit explorer DIR/out-N`)")
    parser.add_argument("--child", nargs=3, metavar=("CANDIDATES", "OUT", "PROGRESS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    sizes = sorted(int(s) for s in args.sizes.split(","))
    server, base_url = local_server.start(make_jpeg, fault_of)
    entries = english_entries()
    if args.progress_overhead:
        try:
            progress_overhead(args.progress_overhead, args.rounds, base_url, entries)
        finally:
            server.terminate()
        return
    rows = []
    try:
        with (contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory()) as root:
            os.makedirs(root, exist_ok=True)
            for n in sizes:
                rows.append(run_size(n, base_url, entries, root))
                print(f"  {n:,} candidates: {rows[-1]['seconds']:.1f} s", file=sys.stderr)
    finally:
        server.terminate()
    print_table(rows)


if __name__ == "__main__":
    main()
