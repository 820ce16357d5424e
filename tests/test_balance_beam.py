"""Balancing on Beam over a synthetic Zipf pool: the kept set follows the rule and is the
same on every runner, worker count and input file order."""
import glob
import json
import math
import random

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from openwit.pipeline.config import parse_curate_args
from openwit.pipeline.beam.graph import read_stage, sample_pool
from openwit.pipeline.stages.balance import count_entries, keep_probability
from openwit.pipeline.stages.match import Matcher

N_ENTRIES, N_PAIRS, THRESHOLD = 300, 30_000, 150


def zipf_pool(seed: int = 0):
    rng = random.Random(seed)
    entries = [f"w{i:03d}" for i in range(N_ENTRIES)]
    weights = [1.0 / (rank + 1) ** 1.1 for rank in range(N_ENTRIES)]
    rows = []
    for i in range(N_PAIRS):
        words = rng.choices(entries, weights=weights, k=rng.randint(1, 3))
        rows.append({"url": f"http://127.0.0.1/img/{i}.jpg", "caption": "a photo of " + " and ".join(words)})
    return entries, rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("zipf")
    entries, rows = zipf_pool()
    (root / "vocab.txt").write_text("\n".join(entries) + "\n")
    write_jsonl(root / "pool.jsonl", rows)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    (root / "shuffled").mkdir()
    write_jsonl(root / "shuffled" / "b.jsonl", shuffled[: N_PAIRS // 2])  # two files, another order
    write_jsonl(root / "shuffled" / "a.jsonl", shuffled[N_PAIRS // 2:])
    return {"root": root, "entries": entries, "rows": rows}


def kept_urls(inputs: str, vocab: str, out_dir, runner_args=()) -> set:
    cfg, beam_args = parse_curate_args(["--input", inputs, "--vocab", vocab, "--output", str(out_dir),
                                        "--threshold", str(THRESHOLD), "--pre-download-slack", "1",
                                        "--seed", "3", *runner_args])
    p = beam.Pipeline(options=PipelineOptions(beam_args))
    candidates, _ = read_stage(p, cfg)
    sampled = sample_pool(candidates, cfg, N_ENTRIES, with_text=False)["sampled"]
    _ = sampled | beam.Map(lambda r: r.url) | beam.io.WriteToText(str(out_dir / "kept"))
    p.run().wait_until_finish()
    return {line.strip() for path in glob.glob(str(out_dir / "kept*")) for line in open(path)}


@pytest.fixture(scope="module")
def in_memory(pool):
    root = pool["root"]
    return kept_urls(str(root / "pool.jsonl"), str(root / "vocab.txt"), root / "mem")


def test_the_kept_set_follows_the_balancing_rule(pool, in_memory):
    matcher = Matcher.from_entries(pool["entries"])
    matches = [matcher.match(row["caption"]) for row in pool["rows"]]
    counts = count_entries(matches, N_ENTRIES)
    assert (counts > THRESHOLD).sum() >= 10  # a real head to cut
    kept = [row["url"] in in_memory for row in pool["rows"]]
    for ids, is_kept in zip(matches, kept):
        if all(counts[i] <= THRESHOLD for i in ids):
            assert is_kept  # every pair of tail entries only is kept
    p_pair = np.array([keep_probability(ids, counts, THRESHOLD) for ids in matches])
    for entry in np.flatnonzero(counts > THRESHOLD):
        rows = [i for i, ids in enumerate(matches) if entry in ids]
        expected, sigma = p_pair[rows].sum(), math.sqrt((p_pair[rows] * (1 - p_pair[rows])).sum())
        observed = sum(kept[i] for i in rows)
        assert abs(observed - expected) <= 4 * sigma + 1e-9, (pool["entries"][entry], observed, expected, sigma)
    assert 0 < sum(kept) < N_PAIRS


def test_the_kept_set_is_the_same_with_two_worker_processes(pool, in_memory, tmp_path):
    root = pool["root"]
    multi = kept_urls(str(root / "pool.jsonl"), str(root / "vocab.txt"), tmp_path,
                      ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"])
    assert multi == in_memory


def test_the_kept_set_is_the_same_for_another_file_order(pool, in_memory, tmp_path):
    root = pool["root"]
    assert kept_urls(str(root / "shuffled" / "*.jsonl"), str(root / "vocab.txt"), tmp_path) == in_memory
