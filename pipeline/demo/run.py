"""`openwit demo`: the whole chain on a synthetic web served on 127.0.0.1.

Generates the web (pipeline/demo/web.py), writes its candidate list and vocabulary, runs
`curate` on Beam (FnApiRunner), trains the tiny model on the shards, evaluates it zero-shot
on a held-out set that is not in the shards, and prints where everything is.
"""
from __future__ import annotations

import argparse
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from openwit.pipeline.demo import web as demo_web
from openwit.pipeline.audit.summary import summary_text
from openwit.pipeline.curate.run import OutputConflict, curate
from openwit.pipeline.common.flags import to_argv
from openwit.pipeline.config import CurateConfig, with_default_runner
from openwit.pipeline.download.client import DownloadConfig
from openwit.pipeline.stages.image import ImageConfig
from openwit.pipeline.output import layout


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="openwit demo", description=__doc__.splitlines()[0])
    p.add_argument("--output", default="demo_out", help="output directory (default: demo_out)")
    p.add_argument("--images", type=int, default=600, help="images in the synthetic web")
    p.add_argument("--threshold", type=int, default=40, help="balancing cap t for the demo's small pool")
    p.add_argument("--steps", type=int, default=1000, help="training steps on the shards (0: skip training)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace a different demo's output")
    return p


def write_web_inputs(web_dir: str, web: demo_web.DemoWeb, base_url: str) -> tuple[str, str]:
    os.makedirs(web_dir, exist_ok=True)
    candidates = os.path.join(web_dir, "candidates.parquet")
    pq.write_table(pa.Table.from_pylist(demo_web.rows_for(web, base_url)), candidates)
    vocab = os.path.join(web_dir, "vocab.txt")
    with open(vocab, "w") as f:
        f.write("\n".join(demo_web.demo_vocab()) + "\n")
    return candidates, vocab


def curate_config(candidates: str, vocab: str, out: str, args) -> CurateConfig:
    return CurateConfig(
        inputs=(candidates,), vocab=vocab, output=os.path.join(out, "curated"), seed=args.seed,
        threshold=args.threshold, samples_per_shard=100, ledger_parts=4, overwrite=args.overwrite,
        # Flat drawings of shapes look alike in a 64-bit pHash (nearest distinct neighbours
        # at 2-8 bits, measured), so the demo merges identical pHashes only.
        near_dup_distance=0,
        # The synthetic images are 72-160 px: below the DataComp default of 200.
        image=ImageConfig(image_size=64, resize_mode="center_crop", min_image_size=64),
        download=DownloadConfig(max_image_bytes=2 * 1024 * 1024, timeout=5.0, retries=1, allow_loopback=True),
    )


# The flags of the command line the manifest records for the demo (its "argv"), in the order
# earlier versions wrote them; any other setting that differs from its default follows.
RECORDED_FLAGS = ("inputs", "vocab", "output", "seed", "threshold", "samples_per_shard", "image.image_size",
                  "image.resize_mode", "download.max_image_bytes", "download.timeout", "download.retries",
                  "ledger_parts", "download.allow_loopback", "image.min_image_size", "near_dup_distance", "overwrite")


DEMO_CONTEXT = 77


def train_and_evaluate(shards: str, heldout: str, checkpoint: str, steps: int, seed: int) -> float:
    from openwit.trainer.config import TrainConfig
    from openwit.trainer.evaluate import zero_shot_accuracy
    from openwit.trainer.train import train

    # The demo's captions are short (under 77 bytes): CLIP's 77 keeps the demo fast; the
    # trainer's default (160) is sized for web alt-text (docs/training.md).
    result = train(TrainConfig(shards=shards, steps=steps, seed=seed, output=checkpoint, log_every=25,
                               context_length=DEMO_CONTEXT))
    return zero_shot_accuracy(result.checkpoint, heldout)


CHECKPOINT = "checkpoint.pt"
# What the demo writes into its --output: the only names it replaces on a rerun. Training
# writes its metrics log next to the checkpoint (trainer/train.py, OUTPUT.jsonl).
DEMO_NAMES = ("web", "curated", "heldout", CHECKPOINT, CHECKPOINT + ".jsonl", "zero_shot.json")


def check_output(out: str, overwrite: bool) -> bool:
    """Whether curate may replace what is there: a previous demo's output, or --overwrite.
    The web's port changes per run, so a rerun is never the 'same command' for curate.
    Files the demo did not write are never replaced: their folder is refused."""
    names = set(os.listdir(out)) if os.path.isdir(out) else set()
    foreign = sorted(names - set(DEMO_NAMES))
    if foreign:
        raise SystemExit(f"openwit demo: {out} holds files the demo did not write ({', '.join(foreign[:5])}"
                         f"{' ...' if len(foreign) > 5 else ''}); it never replaces them, with or without "
                         "--overwrite: choose an empty folder for --output")
    if not names:
        return overwrite
    if overwrite or os.path.exists(os.path.join(out, "web", "candidates.parquet")):
        return True
    raise SystemExit(f"openwit demo: {out} is not empty and holds no demo; pass --overwrite or another --output")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = os.path.abspath(args.output)
    args.overwrite = check_output(out, args.overwrite)
    web = demo_web.build_web(args.images, seed=args.seed)
    with demo_web.serve(web.routes) as base_url:
        print(f"synthetic web: {len(web.rows)} candidates served at {base_url}")
        candidates, vocab = write_web_inputs(os.path.join(out, "web"), web, base_url)
        cfg = curate_config(candidates, vocab, out, args)
        try:
            curate(cfg, with_default_runner([]), ["curate"] + to_argv(cfg, first=RECORDED_FLAGS))
        except OutputConflict as err:
            raise SystemExit(f"openwit demo: {err}") from None
    heldout = demo_web.write_heldout(os.path.join(out, "heldout"), seed=args.seed)
    shards = layout.shards_dir(cfg.output)
    checkpoint = os.path.join(out, CHECKPOINT)
    print("\n" + summary_text(cfg.output))
    accuracy = None
    if args.steps > 0:
        accuracy = train_and_evaluate(shards, heldout, checkpoint, args.steps, args.seed)
    print(f"\nshards      {shards}  (sizes.json, one .parquet index per shard)")
    print(f"ledger      {layout.ledger_dir(cfg.output)}  (one terminal row per candidate)")
    print(f"manifest    {layout.manifest_path(cfg.output)}")
    print(f"held-out    {heldout}  ({len(demo_web.SHAPES)} shape classes, not in the shards)")
    if accuracy is not None:
        chance = 1 / len(demo_web.SHAPES)
        with open(os.path.join(out, "zero_shot.json"), "w") as f:
            json.dump({"accuracy": accuracy, "chance": chance, "classes": len(demo_web.SHAPES),
                       "steps": args.steps, "seed": args.seed}, f, indent=1)
        print(f"checkpoint  {checkpoint}")
        print(f"zero-shot   {accuracy:.1%} on the held-out shapes (chance {chance:.1%})")
    return 0
