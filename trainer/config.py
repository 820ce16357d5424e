"""Training configuration: one dataclass, nanoGPT style.

The defaults describe the *tiny* walking-skeleton model: it trains on CPU in
seconds and exists to prove the whole path (shards -> loader -> model -> loss ->
checkpoint -> zero-shot eval) works end to end. A ViT-B/32 run later changes
only these numbers (image_size=224, patch_size=32, widths 768/512, ...).

Each field is also its flag (pipeline/common/flags.py, as for `openwit curate`), so the
command line in train.py is generated from this one place and cannot drift from it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from openwit.pipeline.common import flags


def _opt(default, help_text: str, **flag):
    """A TrainConfig field and its flag; --help shows the default, except for a switch, a
    fixed choice or a required flag."""
    shown = not isinstance(default, bool) and "choices" not in flag and not flag.get("required")
    return flags.opt(default, help_text, show_default=shown, **flag)


@dataclass
class TrainConfig:
    # data
    shards: str = _opt("", "directory of WebDataset shards (*.tar, optional sizes.json)", required=True,
                       metavar="DIR")
    num_workers: int = _opt(0, "DataLoader worker processes (0 = load in the main process)")
    shuffle_buffer: int = _opt(256, "sample shuffle buffer size")
    online_balance: int = _opt(0, "online balancing (MetaCLIP 2): each epoch keeps a sample with MetaCLIP's "
                               "p = 1 - prod(1 - min(1, t/count_e)) over its entries, counted in the shards' "
                               "Parquet indexes, drawn anew per epoch; the value is t (0: off)")
    # optimisation
    steps: int = _opt(100, "number of optimiser steps")
    batch_size: int = _opt(32, "samples per batch (also the number of negatives + 1)")
    lr: float = _opt(1e-3, "peak learning rate after warmup")
    weight_decay: float = _opt(0.1, "AdamW weight decay on matrices (not gains/biases/embeddings)")
    warmup_steps: int = _opt(10, "linear warmup steps before the cosine decay")
    grad_clip: float = _opt(1.0, "max gradient norm (0 disables clipping)")
    accum_steps: int = _opt(1, "micro-batches per optimiser step (gradient accumulation)")
    # runtime
    device: str = _opt("cpu", "cpu or cuda", choices=("cpu", "cuda"))
    seed: int = _opt(0, "seed for weights, data order and augmentation")
    output: str = _opt("checkpoints/tiny_clip.pt", "where to write the checkpoint")
    log_every: int = _opt(10, "print the loss every N steps")
    tensorboard: str = _opt("", "also write the metrics as TensorBoard events to this directory "
                            "(needs the tensorboard package)")
    log_file: str = _opt("", "JSONL metrics file (default: the checkpoint path + .jsonl)")
    save_every: int = _opt(0, "also write the checkpoint every N steps (0: only at the end)")
    resume: str = _opt("", "checkpoint to resume from: weights, optimiser, step, RNG and data position")
    dist_init_method: str = _opt("env://", "torch.distributed rendezvous under torchrun (env:// reads "
                                 "MASTER_ADDR/PORT; file:///path needs no network)")
    eval_every: int = _opt(0, "evaluate every N steps and at the end (0: never); needs --eval-heldout/--eval-shards")
    eval_heldout: str = _opt("", "zero-shot set for periodic evaluation (labels.csv folder or labelled shards)")
    eval_shards: str = _opt("", "held-out shards for periodic retrieval recall@1/5/10")
    compile: bool = _opt(False, "torch.compile the model (faster steps on GPU after a warm-up)")
    grad_checkpointing: bool = _opt(False, "recompute transformer blocks in the backward: less memory, more time")
    precision: str = _opt("auto", "auto (bf16 autocast on CUDA, fp32 on CPU), bf16 or fp32",
                          choices=("auto", "bf16", "fp32"))
    # model: image tower (tiny ViT)
    image_size: int = _opt(32, "input image side in pixels")
    patch_size: int = _opt(8, "ViT patch side in pixels")
    vision_width: int = _opt(64, "image transformer width")
    vision_layers: int = _opt(2, "image transformer blocks")
    vision_heads: int = _opt(2, "image transformer attention heads")
    # model: text tower (causal transformer over bytes)
    # 160 bytes: 95%+ of real short texts in every language group fit whole, where 77 cut 13-18%
    # of them (bench/bench_captions.py, docs/training.md). A checkpoint stores its own length.
    context_length: int = _opt(160, "text tokens (bytes) per caption, including start/end; longer captions "
                               "are cut")
    text_width: int = _opt(64, "text transformer width")
    text_layers: int = _opt(2, "text transformer blocks")
    text_heads: int = _opt(2, "text transformer attention heads")
    # shared
    embed_dim: int = _opt(64, "size of the joint image-text embedding")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Rebuild from a checkpoint's dict, ignoring keys this version lacks."""
        return flags.from_dict(cls, values)


# Model shapes by name for `--config`. b32 is OpenAI CLIP's ViT-B/32 (image 224, patch 32,
# 12 x 768 vision, 12 x 512 text, 512-d joint space) with a byte context of 160 where CLIP has
# 77 BPE tokens: 77 bytes hold about 12 English words, 77 BPE tokens about 60.
PRESETS = {
    "tiny": {},
    "b32": dict(image_size=224, patch_size=32, vision_width=768, vision_layers=12, vision_heads=12,
                context_length=160, text_width=512, text_layers=12, text_heads=8, embed_dim=512,
                batch_size=256, lr=5e-4, warmup_steps=2000, weight_decay=0.2),
}


def preset(name_or_file: str) -> dict:
    """Field values of a preset name, or of a JSON file of TrainConfig fields."""
    import json

    if name_or_file in PRESETS:
        return dict(PRESETS[name_or_file])
    with open(name_or_file) as f:
        values = json.load(f)
    unknown = set(values) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise ValueError(f"{name_or_file}: unknown TrainConfig fields {sorted(unknown)}")
    return values
