"""Training throughput on openwit shards: openwit's trainer vs open_clip's own trainer
(`python -m open_clip_train.main`), same tiny model shape, same shards, same batch size,
plus openwit's loader alone (issue 8). open_clip runs in its own venv
(bench/setup_openclip.sh: it pulls torch 2.14.1 and torchvision, ~6 GB; never in tests or CI).

    bash bench/setup_openclip.sh ../openclip-venv
    python bench/bench_train.py --openclip-venv ../openclip-venv [--shards DIR] [--steps 60] [--device cpu]

Without --shards, `openwit demo --steps 0` curates fresh shards first (on 127.0.0.1). The
open_clip run also shows that openwit shards train with open_clip's trainer unchanged.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from openwit.pipeline.output import layout

# The tiny shape of openwit's default TrainConfig, in open_clip's config format.
TINY = {"embed_dim": 64,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def demo_shards(tmp: str, images: int = 600) -> str:
    subprocess.run([sys.executable, "-m", "openwit.pipeline.cli", "demo", "--output", os.path.join(tmp, "demo"),
                    "--images", str(images), "--steps", "0"], check=True, capture_output=True)
    return layout.shards_dir(os.path.join(tmp, "demo", "curated"))


def openwit_rate(shards: str, steps: int, batch: int, device: str, tmp: str) -> float:
    """Median samples/s of openwit's trainer over the steps after the first 5."""
    from openwit.trainer.config import TrainConfig
    from openwit.trainer.train import train

    out = os.path.join(tmp, "openwit.pt")
    train(TrainConfig(shards=shards, steps=steps, batch_size=batch, device=device, output=out, log_every=10 ** 9,
                      context_length=TINY["text_cfg"]["context_length"]))  # open_clip's 77, not openwit's default
    rates = [json.loads(line)["samples_per_s"] for line in open(out + ".jsonl")][5:]
    return statistics.median(rates)


def loader_rate(shards: str, batch: int, batches: int) -> float:
    from openwit.trainer.config import TrainConfig
    from openwit.trainer.data import train_batches

    iterator = train_batches(TrainConfig(shards=shards, batch_size=batch))
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    seconds = time.perf_counter() - start
    iterator.close()
    return batch * batches / seconds


def openclip_rate(venv: str, shards: str, steps: int, batch: int, device: str, tmp: str,
                  model: str = "openwit-tiny", workers: int = 1) -> float:
    """Median samples/s that open_clip's trainer logs, per step after the first 5. `model`:
    openwit-tiny (the TINY shape above) or one of open_clip's own (ViT-B-32)."""
    python = os.path.join(venv, "bin", "python")
    config_dir = subprocess.run([python, "-c", "import open_clip, os; print(os.path.join(os.path.dirname("
                                 "open_clip.__file__), 'model_configs'))"], capture_output=True, text=True,
                                check=True).stdout.strip()
    if model == "openwit-tiny":
        with open(os.path.join(config_dir, "openwit-tiny.json"), "w") as f:
            json.dump(TINY, f)
    tars = sorted(glob.glob(os.path.join(shards, "*.tar")))
    sizes = json.load(open(layout.sizes_path(shards)))
    samples = sum(sizes.values())
    pattern = os.path.join(shards, f"{{{os.path.basename(tars[0])[:-4]}..{os.path.basename(tars[-1])[:-4]}}}.tar")
    command = [python, "-m", "open_clip_train.main", "--train-data", pattern, "--dataset-type", "webdataset",
               "--train-num-samples", str(steps * batch), "--batch-size", str(batch), "--epochs", "1",
               "--model", model, "--precision", "fp32" if device == "cpu" else "amp_bf16",
               "--workers", str(workers), "--device", device, "--lr", "1e-3", "--warmup", "10", "--log-every-n-steps", "1",
               "--logs", os.path.join(tmp, "openclip-logs"), "--save-frequency", "0", "--report-to", "",
               "--seed", "0", "--dataset-resampled"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    log = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"open_clip failed ({samples} samples):\n{log[-3000:]}")
    rates = [float(r) for r in re.findall(r"([\d.]+)/s/gpu", log)]
    if len(rates) < 6:
        raise RuntimeError(f"open_clip logged {len(rates)} steps:\n{log[-3000:]}")
    return statistics.median(rates[5:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--openclip-venv", required=True)
    parser.add_argument("--shards", default=None)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards or demo_shards(tmp)
        ours = openwit_rate(shards, args.steps, args.batch_size, args.device, tmp)
        theirs = openclip_rate(args.openclip_venv, shards, args.steps, args.batch_size, args.device, tmp)
        loader = loader_rate(shards, args.batch_size, 20)
    print(f"tiny CLIP, batch {args.batch_size}, {args.steps} steps on {args.device}, shards {shards}")
    print(f"{'run':<34}{'samples/s':>10}{'ratio':>8}")
    print(f"{'open_clip_train.main (anchor)':<34}{theirs:>10.0f}{1.0:>8.2f}")
    print(f"{'openwit train':<34}{ours:>10.0f}{ours / theirs:>8.2f}")
    print(f"{'openwit loader alone':<34}{loader:>10.0f}{loader / theirs:>8.2f}")
    print(f"goal openwit >= 1.0x open_clip: {'PASS' if ours >= theirs else 'FAIL'}")


if __name__ == "__main__":
    main()
