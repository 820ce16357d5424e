"""Train the tiny CLIP on a WebDataset shard directory.

    openwit train --shards DIR [--steps N] [--batch-size B] [--device cpu|cuda] ...
    python -m openwit.trainer.train --shards DIR ...

The loop reads top to bottom: seed, build model and optimiser (or resume them
from a checkpoint), then for each step set the learning rate, run
cfg.accum_steps micro-batches (bf16 autocast on CUDA), clip, step, clamp the
temperature, and log a JSON line. Under torchrun every rank trains its own
shards (data.rank_shards) with DDP; loss.clip_loss gathers every rank's
features so the negatives are the global batch. Rank 0 logs and saves.

    torchrun --nproc_per_node N -m openwit.trainer.train --shards DIR --device cuda ...
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from openwit.pipeline.common import flags

from .config import TrainConfig, preset
from .data import count_samples, train_batches
from .loss import clip_loss, world
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


def autocast(cfg: TrainConfig, device: torch.device):
    """bf16 autocast on CUDA ("auto" or "bf16"); plain fp32 otherwise. bf16 keeps fp32's
    exponent range, so no loss scaler is needed."""
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)


@dataclass
class TrainState:
    """Everything a resumed run needs besides the config: the step counts optimiser steps,
    and the data position (micro-batches consumed) follows from it."""
    step: int = 0
    losses: list = None

    def __post_init__(self):
        self.losses = [] if self.losses is None else self.losses


def save_training_checkpoint(path: str, model, optimizer, cfg: TrainConfig, state: TrainState) -> None:
    save_checkpoint(path, model, cfg, step=state.step, losses=state.losses,
                    optimizer=optimizer.state_dict(), rng=torch.get_rng_state(),
                    batches_consumed=state.step * cfg.accum_steps)


# The fields that shape the weights: a resumed run must have the checkpoint's values.
MODEL_FIELDS = ("image_size", "patch_size", "vision_width", "vision_layers", "vision_heads", "context_length",
                "text_width", "text_layers", "text_heads", "embed_dim")


def resume_from(path: str, model, optimizer, cfg: TrainConfig) -> TrainState:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if "optimizer" not in payload:
        raise ValueError(f"{path} holds weights only (no optimiser state): it cannot be resumed")
    # e.g. a run started at the old default context of 77, resumed after the default changed
    saved = payload["config"]
    differ = {f: saved[f] for f in MODEL_FIELDS if saved.get(f, getattr(cfg, f)) != getattr(cfg, f)}
    if differ:
        flags_needed = " ".join(f"--{f.replace('_', '-')} {v}" for f, v in differ.items())
        raise ValueError(f"{path} was trained with another model shape; resume it with {flags_needed}")
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["rng"])
    return TrainState(step=payload["step"], losses=list(payload["losses"]))


def train_step(model, optimizer, batches, cfg: TrainConfig, device: torch.device, step: int):
    """One optimiser step over cfg.accum_steps micro-batches; -> (the mean loss, seconds spent
    waiting for data). Under DDP
    the gradients are all-reduced once, on the last micro-batch."""
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, cfg)
    optimizer.zero_grad(set_to_none=True)
    total, waited = 0.0, 0.0
    for micro in range(cfg.accum_steps):
        wait_start = time.perf_counter()
        images, tokens = next(batches)
        waited += time.perf_counter() - wait_start
        last = micro == cfg.accum_steps - 1
        with (contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()):
            with autocast(cfg, device):
                image_features, text_features, logit_scale = model(images.to(device), tokens.to(device))
                loss = clip_loss(image_features.float(), text_features.float(), logit_scale)
            (loss / cfg.accum_steps).backward()
        total += loss.item() / cfg.accum_steps
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    unwrap(model).clamp_logit_scale()
    return total, waited


def unwrap(model):
    """The CLIP inside DDP (.module) and torch.compile (._orig_mod) wrappers."""
    for attribute in ("module", "_orig_mod", "module"):
        model = getattr(model, attribute, model)
    return model


def launched_distributed() -> bool:
    """WORLD_SIZE > 1, or torchrun even with one process (it sets TORCHELASTIC_RUN_ID), so
    `torchrun --nproc_per_node 1` on one GPU runs the same NCCL + DDP path as N GPUs."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or "TORCHELASTIC_RUN_ID" in os.environ


def setup_distributed(cfg: TrainConfig) -> torch.device:
    """Under torchrun: join the process group (NCCL on CUDA, gloo on CPU) and pick this
    process's GPU. -> the device to train on."""
    device = resolve_device(cfg.device)
    if not launched_distributed():
        return device
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=cfg.dist_init_method,
                            rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    return device


def train(cfg: TrainConfig, stop_at: int | None = None) -> TrainResult:
    """Train to cfg.steps (or stop after `stop_at` steps, saving a resumable checkpoint, as
    a run killed right after a save would leave it)."""
    device = setup_distributed(cfg)
    rank, world_size = world()
    ddp = dist.is_available() and dist.is_initialized()  # torchrun, even with one process
    torch.manual_seed(cfg.seed)  # weights (the same on every rank); data order and crops: data.py
    model = CLIP(cfg).to(device)
    # CLIP's AdamW settings: beta2 0.98 and eps 1e-6 are steadier for contrastive batches.
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6
    )
    state = resume_from(cfg.resume, model, optimizer, cfg) if cfg.resume else TrainState()
    if cfg.compile:
        model = torch.compile(model)  # the checkpoint still saves the plain module's weights
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.index is not None
                                                          else None)
    num_params = sum(p.numel() for p in model.parameters())
    say(f"training {num_params / 1e6:.2f}M params on {count_samples(cfg.shards)} samples "
        f"from {cfg.shards}, steps {state.step}..{cfg.steps} of batch {cfg.batch_size}x{cfg.accum_steps}"
        f"x{world_size} ranks{f' (DDP, {dist.get_backend()})' if ddp else ''} on {device}")
    batches = train_batches(cfg, skip=state.step * cfg.accum_steps)
    metrics = MetricsLog(cfg.log_file or cfg.output + ".jsonl", append=bool(cfg.resume), tensorboard=cfg.tensorboard,
                         steps=(state.step, cfg.steps)) if rank == 0 else None
    start = time.perf_counter()
    model.train()
    last = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    while state.step < last:
        step_start = time.perf_counter()
        loss, waited = train_step(model, optimizer, batches, cfg, device, state.step)
        state.losses.append(loss)
        if metrics:
            metrics.write(state.step, loss, lr_at(state.step, cfg), unwrap(model), cfg,
                          time.perf_counter() - step_start, waited, world_size)
        state.step += 1
        if metrics and cfg.eval_every and (state.step % cfg.eval_every == 0 or state.step == last):
            metrics.record({"step": state.step, "eval": evaluate_now(unwrap(model), cfg)})
        if cfg.save_every and state.step % cfg.save_every == 0 and state.step < last and rank == 0:
            save_training_checkpoint(cfg.output, unwrap(model), optimizer, cfg, state)
    batches.close()  # shuts down DataLoader workers
    seconds = time.perf_counter() - start
    losses = state.losses
    head, tail = losses[:10], losses[-10:]
    if losses:
        say(f"done in {seconds:.1f}s: mean loss of first {len(head)} steps "
            f"{statistics.fmean(head):.4f}, last {len(tail)} steps {statistics.fmean(tail):.4f}")
    if rank == 0:
        metrics.close()
        save_training_checkpoint(cfg.output, unwrap(model), optimizer, cfg, state)
        say(f"saved {cfg.output}")
    if ddp:
        dist.barrier()  # rank 0 may still be saving: nobody tears the group down before it is done
        dist.destroy_process_group()
    return TrainResult(losses=losses, checkpoint=cfg.output, seconds=seconds)


def say(message: str) -> None:
    if world()[0] == 0:
        print(message, flush=True)


class MetricsLog:
    """One JSON line per step (loss, lr, temperature, samples/s, the fraction of the step spent
    waiting for data), a printed line every cfg.log_every steps, a progress bar when the
    output is a terminal, and TensorBoard events if asked for."""

    def __init__(self, path: str, append: bool, tensorboard: str = "", steps=(0, 0)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a" if append else "w")
        self.board = tensorboard_writer(tensorboard)
        from tqdm import tqdm

        self.bar = tqdm(initial=steps[0], total=steps[1], unit="step", disable=not sys.stdout.isatty())

    def write(self, step: int, loss: float, lr: float, model, cfg: TrainConfig, seconds: float,
              waited: float, world_size: int = 1) -> None:
        scale = model.logit_scale.exp().item()
        samples_per_s = cfg.batch_size * cfg.accum_steps * world_size / max(seconds, 1e-9)
        self.file.write(json.dumps({"step": step, "loss": round(loss, 6), "lr": lr, "logit_scale": round(scale, 4),
                                    "samples_per_s": round(samples_per_s, 1),
                                    "data_wait": round(waited / max(seconds, 1e-9), 4)}) + "\n")
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        if self.board:
            for name, value in (("loss", loss), ("lr", lr), ("logit_scale", scale), ("samples_per_s", samples_per_s)):
                self.board.add_scalar(f"train/{name}", value, step)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            self.bar.write(f"step {step:5d}  loss {loss:.4f}  lr {lr:.2e}  scale {scale:.1f}  {samples_per_s:.0f} samples/s")

    def record(self, values: dict) -> None:
        self.file.write(json.dumps(values) + "\n")
        print("eval", json.dumps(values["eval"]), flush=True)

    def close(self) -> None:
        self.bar.close()
        self.file.close()
        if self.board:
            self.board.close()


def tensorboard_writer(directory: str):
    if not directory:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise SystemExit(f"--tensorboard needs the tensorboard package (pip install tensorboard): {err}") from None
    return SummaryWriter(directory)


def evaluate_now(model, cfg: TrainConfig) -> dict:
    """Zero-shot accuracy and retrieval recall of the model being trained (rank 0 only)."""
    from .evaluate import labelled_images, retrieval_recall, zero_shot

    model.eval()
    results = {}
    if cfg.eval_heldout:
        results["zero_shot"] = zero_shot(model, cfg, labelled_images(cfg.eval_heldout))
    if cfg.eval_shards:
        results.update(retrieval_recall(model, cfg, cfg.eval_shards))
    model.train()
    return results


# ------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    """One --flag per TrainConfig field (shards -> --shards, batch_size -> --batch-size)."""
    parser = argparse.ArgumentParser(
        prog="openwit train", description="Train a CLIP on WebDataset shards (torchrun for DDP)."
    )
    flags.add_flags(parser, TrainConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    """--config tiny|b32|FILE sets the defaults; explicit flags override them."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default="tiny")
    known, rest = pre.parse_known_args(argv)
    parser = build_parser()
    parser.add_argument("--config", default="tiny", help="preset: tiny (default), b32 (ViT-B/32), or a JSON file "
                        "of these fields; flags given here override it")
    parser.set_defaults(**preset(known.config))
    args = parser.parse_args(rest + ["--config", known.config])
    train(flags.parsed(parser, TrainConfig, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
