"""Train the tiny CLIP on a WebDataset shard directory.

    openwit train --shards DIR [--steps N] [--batch-size B] [--device cpu|cuda] ...
    python -m openwit.trainer.train --shards DIR ...

The loop reads top to bottom: seed, build model and optimiser, then for each
step set the learning rate, fetch a batch, compute the symmetric InfoNCE loss,
step, clamp the temperature, and log. Single process for now; AMP and DDP
(torchrun) slot into this loop and into loss.gather_features later.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass, fields

import torch

from .config import TrainConfig
from .data import count_samples, train_batches
from .loss import clip_loss
from .model import CLIP, save_checkpoint


@dataclass
class TrainResult:
    losses: list[float]
    checkpoint: str
    seconds: float = 0.0


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine decay to 0 at cfg.steps.

    A pure function of the step, so resuming from a checkpoint needs no
    scheduler state.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_steps = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay only weight matrices. Gains, biases, the temperature and the
    embedding tables are excluded, as in CLIP: shrinking them towards zero
    fights normalisation and the temperature rather than regularising."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim < 2 or "embedding" in name or "logit_scale" in name
        (no_decay if skip else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, not {name!r}")
    return torch.device(name)


def train(cfg: TrainConfig) -> TrainResult:
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)  # weights; data order and crops are seeded in data.py
    model = CLIP(cfg).to(device)
    # CLIP's AdamW settings: beta2 0.98 and eps 1e-6 are steadier for contrastive batches.
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6
    )
    num_params = sum(p.numel() for p in model.parameters())
    print(f"training {num_params / 1e6:.2f}M params on {count_samples(cfg.shards)} samples "
          f"from {cfg.shards}, {cfg.steps} steps of batch {cfg.batch_size} on {device}")

    batches = train_batches(cfg)
    losses: list[float] = []
    start = time.perf_counter()
    model.train()
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        images, tokens = next(batches)
        images = images.to(device, non_blocking=True)
        tokens = tokens.to(device, non_blocking=True)

        image_features, text_features, logit_scale = model(images, tokens)
        loss = clip_loss(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        model.clamp_logit_scale()

        losses.append(loss.item())  # a sync per step; fine until the GPU version
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            print(f"step {step:5d}  loss {losses[-1]:.4f}  lr {lr_at(step, cfg):.2e}  "
                  f"scale {logit_scale.exp().item():.1f}")
    batches.close()  # shuts down DataLoader workers
    seconds = time.perf_counter() - start

    head, tail = losses[:10], losses[-10:]
    print(f"done in {seconds:.1f}s: mean loss of first {len(head)} steps "
          f"{statistics.fmean(head):.4f}, last {len(tail)} steps {statistics.fmean(tail):.4f}")
    save_checkpoint(cfg.output, model, cfg, step=cfg.steps, losses=losses)
    print(f"saved {cfg.output}")
    return TrainResult(losses=losses, checkpoint=cfg.output, seconds=seconds)


# ------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    """One --flag per TrainConfig field (shards -> --shards, batch_size -> --batch-size)."""
    parser = argparse.ArgumentParser(
        prog="openwit train", description="Train a tiny CLIP on WebDataset shards."
    )
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kwargs = {"type": type(f.default), "default": f.default, "help": f.metadata["help"]}
        if f.name == "shards":
            kwargs.update(required=True, default=None, metavar="DIR")
        elif f.name == "device":
            kwargs["choices"] = ["cpu", "cuda"]
        else:
            kwargs["help"] += " (default: %(default)s)"
        parser.add_argument(flag, dest=f.name, **kwargs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    train(TrainConfig(**vars(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
