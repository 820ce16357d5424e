"""Match + balance of N synthetic captions against the shipped vocabulary on FnApiRunner:
wall time, throughput and peak memory (issue 4). No network: nothing is downloaded.

Captions mix Zipf-distributed entries of the list with filler words, so a head of entries
exceeds t and balancing has work to do. The anchor row times reading the same file alone,
so the ratio shows what matching and balancing add.

    python bench/bench_balance.py [--captions 1000000] [--threshold 20000]
"""
from __future__ import annotations

import argparse
import os
import random

import tempfile
import time

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from openwit.pipeline.common.memory import peak_rss_bytes
from openwit.pipeline.config import parse_curate_args
from openwit.pipeline.beam.graph import read_stage, sample_pool
from openwit.pipeline.stages.match import read_vocab
from openwit.query_lists.build import shipped_list_path


def write_captions(path: str, entries: list[str], n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    ranks = np.minimum(rng.zipf(1.3, size=n * 3), len(entries)) - 1  # a heavy head over the list
    fillers = ["a", "photo", "of", "the", "with", "and", "on", "new"]
    chooser = random.Random(seed)
    rows = []
    for i in range(n):
        words = [entries[r] for r in ranks[3 * i: 3 * i + chooser.randint(1, 3)]] + chooser.sample(fillers, 2)
        rows.append({"url": f"http://127.0.0.1/{i}.jpg", "caption": " ".join(words)})
    pq.write_table(pa.Table.from_pylist(rows), path)


def run(path: str, out: str, threshold: int, vocab_size: int, balance: bool) -> tuple[float, int]:
    cfg, beam_args = parse_curate_args(["--input", path, "--output", out, "--threshold", str(threshold),
                                        "--direct_running_mode", "in_memory"])
    p = beam.Pipeline(options=PipelineOptions(beam_args))
    candidates, _ = read_stage(p, cfg)
    records = sample_pool(candidates, cfg, vocab_size, with_text=False)["sampled"] if balance else candidates
    _ = records | beam.combiners.Count.Globally() | beam.io.WriteToText(os.path.join(out, "count"))
    start = time.perf_counter()
    p.run().wait_until_finish()
    seconds = time.perf_counter() - start
    with open(os.path.join(out, "count-00000-of-00001")) as f:
        return seconds, int(f.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=1_000_000)
    parser.add_argument("--threshold", type=int, default=20_000)
    args = parser.parse_args()
    entries = read_vocab(shipped_list_path())
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "captions.parquet")
        write_captions(path, entries, args.captions)
        read_s, n = run(path, os.path.join(tmp, "read"), args.threshold, len(entries), balance=False)
        full_s, kept = run(path, os.path.join(tmp, "full"), args.threshold, len(entries), balance=True)
    peak_gib = peak_rss_bytes() / 2**30
    print(f"{args.captions:,} captions, {len(entries):,} entries, t = {args.threshold:,}, FnApiRunner in_memory")
    print(f"{'run':<28}{'seconds':>9}{'captions/s':>12}{'ratio':>8}")
    print(f"{'read only (anchor)':<28}{read_s:>9.1f}{n / read_s:>12,.0f}{1:>8.2f}")
    print(f"{'read + match + balance':<28}{full_s:>9.1f}{n / full_s:>12,.0f}{full_s / read_s:>8.2f}")
    print(f"kept after balancing: {kept:,} of {n:,}; peak memory of this process: {peak_gib:.2f} GiB")


if __name__ == "__main__":
    main()
