"""Training configuration: one dataclass, nanoGPT style.

The defaults describe the *tiny* walking-skeleton model: it trains on CPU in
seconds and exists to prove the whole path (shards -> loader -> model -> loss ->
checkpoint -> zero-shot eval) works end to end. A ViT-B/32 run later changes
only these numbers (image_size=224, patch_size=32, widths 768/512, ...).

Each field carries its --help text in `metadata`, so the command line in
train.py is generated from this one place and cannot drift from it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


def _opt(default, help_text: str):
    """A dataclass field whose help text the CLI reuses."""
    return field(default=default, metadata={"help": help_text})


@dataclass
class TrainConfig:
    # data
    shards: str = _opt("", "directory of WebDataset shards (*.tar, optional sizes.json)")
    num_workers: int = _opt(0, "DataLoader worker processes (0 = load in the main process)")
    shuffle_buffer: int = _opt(256, "sample shuffle buffer size")
    # optimisation
    steps: int = _opt(100, "number of optimiser steps")
    batch_size: int = _opt(32, "samples per batch (also the number of negatives + 1)")
    lr: float = _opt(1e-3, "peak learning rate after warmup")
    weight_decay: float = _opt(0.1, "AdamW weight decay on matrices (not gains/biases/embeddings)")
    warmup_steps: int = _opt(10, "linear warmup steps before the cosine decay")
    grad_clip: float = _opt(1.0, "max gradient norm (0 disables clipping)")
    accum_steps: int = _opt(1, "micro-batches per optimiser step (gradient accumulation)")
    # runtime
    device: str = _opt("cpu", "cpu or cuda")
    seed: int = _opt(0, "seed for weights, data order and augmentation")
    output: str = _opt("checkpoints/tiny_clip.pt", "where to write the checkpoint")
    log_every: int = _opt(10, "print the loss every N steps")
    log_file: str = _opt("", "JSONL metrics file (default: the checkpoint path + .jsonl)")
    save_every: int = _opt(0, "also write the checkpoint every N steps (0: only at the end)")
    resume: str = _opt("", "checkpoint to resume from: weights, optimiser, step, RNG and data position")
    dist_init_method: str = _opt("env://", "torch.distributed rendezvous under torchrun (env:// reads "
                                 "MASTER_ADDR/PORT; file:///path needs no network)")
    precision: str = _opt("auto", "auto (bf16 autocast on CUDA, fp32 on CPU), bf16 or fp32")
    # model: image tower (tiny ViT)
    image_size: int = _opt(32, "input image side in pixels")
    patch_size: int = _opt(8, "ViT patch side in pixels")
    vision_width: int = _opt(64, "image transformer width")
    vision_layers: int = _opt(2, "image transformer blocks")
    vision_heads: int = _opt(2, "image transformer attention heads")
    # model: text tower (causal transformer over bytes)
    context_length: int = _opt(64, "text tokens per caption, including start/end")
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
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
