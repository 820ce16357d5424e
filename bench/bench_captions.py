"""Captions that fit (issue 21, item 3): how many captions the byte-level tokenizer cuts at a
given context, and what a longer context costs in training samples/s.

    python bench/bench_captions.py                       # lengths of the repo's caption-like text
    python bench/bench_captions.py --shards DIR          # ... and of a real shard directory's captions
    python bench/bench_captions.py --captions FILE       # ... or of a text file (one caption a line)
    python bench/bench_captions.py --cost                # samples/s on CPU at context 77 vs the default

The tokenizer (trainer/tokenizer.py) spends one token per UTF-8 byte plus start and end, so a
caption fits whole in context C when it has at most C - 2 bytes. Only captions that curation
keeps are counted (the text stage's length rules: pipeline/stages/text.py defaults). Nothing
is downloaded: the repo ships no crawled alt-text, so the default sources are
tests/fixtures/lid_eval.tsv (desktop-file strings in 128 languages, WordNet glosses and
examples, UDHR sentences) and the demo web's captions; --shards measures a real pool.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LID_EVAL = os.path.join(REPO, "tests", "fixtures", "lid_eval.tsv")
CONTEXTS = (77, 128, 160, 192, 256)


def kept_by_curation(caption: str) -> bool:
    from openwit.pipeline.stages.text import TextConfig, word_count

    cfg = TextConfig()
    text = caption.strip()
    return len(text) >= cfg.min_caption_chars and word_count(text) >= cfg.min_caption_words


def repo_captions() -> dict[str, list[str]]:
    """Caption-like text shipped in the repo, by group."""
    groups: dict[str, list[str]] = {"lid_eval en": [], "lid_eval other languages": []}
    with open(LID_EVAL, encoding="utf-8") as f:
        for line in f:
            language, source, text = line.rstrip("\n").split("\t")
            groups["lid_eval en" if language == "en" else "lid_eval other languages"].append(text)
            groups.setdefault(f"  {source.split(':')[0] if source.startswith('desktop') else source}", []).append(text)
            if language != "en":  # worldwide captions (issue 23): scripts cost 1-4 bytes a letter
                groups.setdefault(f"  {script_width(text)}-byte script", []).append(text)
    from openwit.pipeline.demo import web

    groups["demo web"] = [row["caption"] for row in web.build_web(600, seed=0).rows if row["caption"]]
    return groups


def script_width(text: str) -> int:
    """UTF-8 bytes of the text's typical letter: 1 Latin, 2 Cyrillic/Greek/Arabic/Hebrew, 3 CJK,
    Hangul, Thai, Devanagari and most other scripts."""
    widths = sorted(len(ch.encode("utf-8")) for ch in text if ch.isalpha())
    return widths[len(widths) // 2] if widths else 1


def shard_captions(shards_dir: str) -> list[str]:
    from openwit.pipeline.output.shards import tar_members, tar_paths

    captions = []
    for path in tar_paths(shards_dir):
        for _, ext, _, data in tar_members(path):
            if ext == "txt" and data is not None:
                captions.append(data.read().decode("utf-8", errors="replace"))
    return captions


def percentile(sorted_values: list[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def fit_share(byte_lengths: list[int], context: int) -> float:
    """Share of captions that fit whole: at most context - 2 bytes (start and end tokens)."""
    return sum(n <= context - 2 for n in byte_lengths) / len(byte_lengths)


def length_table(groups: dict[str, list[str]]) -> str:
    lines = [f"{'captions (kept by curation)':<28}{'n':>6}{'p50':>6}{'p90':>6}{'p95':>6}{'p99':>6}{'max':>6}  "
             + "".join(f"{'fit@' + str(c):>9}" for c in CONTEXTS)]
    everything: list[int] = []
    for name, captions in groups.items():
        lengths = sorted(len(c.strip().encode("utf-8")) for c in captions if kept_by_curation(c))
        if not lengths:
            continue
        if name.startswith("lid_eval"):  # real text; the sub-groups are already in these two
            everything += lengths
        lines.append(length_row(name, lengths))
    lines.append(length_row("all lid_eval (real text)", sorted(everything)))
    return "\n".join(lines)


def length_row(name: str, lengths: list[int]) -> str:
    cells = "".join(f"{percentile(lengths, q):>6}" for q in (0.5, 0.9, 0.95, 0.99)) + f"{lengths[-1]:>6}"
    return f"{name:<28}{len(lengths):>6}{cells}  " + "".join(f"{fit_share(lengths, c):>9.1%}" for c in CONTEXTS)


# ------------------------------------------------------------------ cost


def step_rate(context: int, shape: dict, batch: int, steps: int, repeats: int) -> float:
    """Training samples per CPU-second of one model shape at one context (one thread): forward, loss, backward and
    AdamW on a fixed random batch (the loader is left out: it does not depend on the context)."""
    import torch

    from openwit.trainer.config import TrainConfig
    from openwit.trainer.loss import clip_loss
    from openwit.trainer.model import CLIP

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = TrainConfig(shards="-", context_length=context, **shape)
    model = CLIP(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 3, cfg.image_size, cfg.image_size)
    tokens = torch.randint(1, 257, (batch, context))
    tokens[:, 0], tokens[:, -1] = 257, 258  # full-length captions: the model's work does not depend on it

    def step():
        image_features, text_features, scale = model(images, tokens)
        loss = clip_loss(image_features, text_features, scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    rates = []
    for _ in range(repeats):
        # CPU seconds of this process on one thread: what the step costs, whatever else the
        # shared machine is running (wall time there swings by 2x between repeats).
        start = time.process_time()
        for _ in range(steps):
            step()
        rates.append(batch * steps / (time.process_time() - start))
    return statistics.median(rates)


def matmul_flops(context: int, shape: dict) -> tuple[float, float]:
    """Forward multiply-adds x 2 of the image and text towers per sample (the transformer
    blocks: 12 w^2 per token for QKV, output and MLP, plus 2 L w for attention scores)."""
    from openwit.trainer.config import TrainConfig

    cfg = TrainConfig(shards="-", context_length=context, **shape)
    tokens = (cfg.image_size // cfg.patch_size) ** 2 + 1

    def tower(length, width, layers):
        return 2 * layers * length * (12 * width ** 2 + 2 * length * width)

    return tower(tokens, cfg.vision_width, cfg.vision_layers), tower(context, cfg.text_width, cfg.text_layers)


SHAPES = {
    "tiny (default)": {},
    "small (64 px, 4x256)": dict(image_size=64, patch_size=8, vision_width=256, vision_layers=4, vision_heads=4,
                                  text_width=256, text_layers=4, text_heads=4, embed_dim=256),
}


def cost_table(contexts: tuple[int, ...], shapes: dict, batch: int, steps: int, repeats: int) -> str:
    """samples/s per model shape and context, and the ratio to context 77."""
    from openwit.trainer.config import PRESETS

    lines = [f"{'model':<24}" + "".join(f"{'ctx ' + str(c):>10}" for c in contexts)
             + "".join(f"{str(c) + '/77':>9}" for c in contexts[1:])]
    for name, shape in shapes.items():
        # Interleave the contexts so a busy neighbour slows them alike.
        rates = {c: [] for c in contexts}
        for _ in range(repeats):
            for c in contexts:
                rates[c].append(step_rate(c, shape, batch, steps, 1))
        median = {c: statistics.median(r) for c, r in rates.items()}
        lines.append(f"{name + ' samples/s':<24}" + "".join(f"{median[c]:>10.0f}" for c in contexts)
                     + "".join(f"{median[c] / median[77]:>9.2f}" for c in contexts[1:]))
    b32 = {k: v for k, v in PRESETS["b32"].items() if k not in ("batch_size", "lr", "warmup_steps", "weight_decay",
                                                                   "context_length")}
    flops = {c: sum(matmul_flops(c, b32)) for c in contexts}
    lines.append(f"{'b32 forward GFLOPs':<24}" + "".join(f"{flops[c] / 1e9:>10.1f}" for c in contexts)
                 + "".join(f"{flops[77] / flops[c]:>9.2f}" for c in contexts[1:])
                 + "   (counted, not timed: the expected GPU ratio)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", default="", help="also measure the captions of this shard directory")
    parser.add_argument("--captions", default="", help="also measure this file's captions (one a line)")
    parser.add_argument("--cost", action="store_true", help="time training steps at context 77 vs the default")
    parser.add_argument("--shapes", default="tiny", help="comma-separated: tiny, small (small is slow on 2 cores)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from openwit.trainer.config import TrainConfig

    groups = repo_captions()
    if args.shards:
        groups[f"shards {args.shards}"] = shard_captions(args.shards)
    if args.captions:
        with open(args.captions, encoding="utf-8") as f:
            groups[f"file {args.captions}"] = [line.rstrip("\n") for line in f if line.strip()]
    default = TrainConfig(shards="-").context_length
    print(f"bytes per caption; fit@C = share with at most C - 2 bytes (whole in context C); default context {default}")
    print(length_table(groups))
    if args.cost:
        print(f"\ntraining step on CPU, one thread, samples per CPU-second, batch {args.batch_size}, median of "
              f"{args.repeats} x {args.steps} steps")
        shapes = {name: shape for name, shape in SHAPES.items() if name.split()[0] in args.shapes.split(",")}
        print(cost_table(tuple(sorted({77, 128, 160, 192, default})), shapes, args.batch_size, args.steps,
                         args.repeats))


if __name__ == "__main__":
    main()
