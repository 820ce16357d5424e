"""Symmetric InfoNCE, the CLIP objective, single-process or distributed.

Row i of the image batch and row i of the text batch are a positive pair; every other row
of the *global* batch is a negative. Under DDP each rank gathers every rank's features
with an all-gather that keeps the autograd graph (its backward sums the gradients back to
the rank that owns each row), then computes the local form: its N rows against all W*N
columns. The mean of the W local losses, which DDP's gradient averaging takes, is exactly
the loss of the global batch, and so are the gradients (tests/test_trainer_distributed.py).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class AllGather(torch.autograd.Function):
    """Concatenate every rank's rows; the backward sums the incoming gradients over ranks
    and hands each rank the rows it owns (a reduce-scatter)."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local.contiguous())
        ctx.rows = local.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every rank's loss depends on every rank's rows
        start = dist.get_rank() * ctx.rows
        return grad[start:start + ctx.rows]


def gather_features(image_features: torch.Tensor, text_features: torch.Tensor):
    """Every rank's features, in rank order, differentiable. Identity on one process."""
    _, size = world()
    if size == 1:
        return image_features, text_features
    return AllGather.apply(image_features), AllGather.apply(text_features)


def clip_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE on L2-normalised features; this rank's share of the global batch.

    logit_scale is the *log* temperature parameter; logits = exp(logit_scale) * img @ txt.T.
    """
    rank, _ = world()
    all_images, all_texts = gather_features(image_features, text_features)
    scale = logit_scale.exp()
    logits_per_image = scale * image_features @ all_texts.T
    logits_per_text = scale * text_features @ all_images.T
    n = image_features.shape[0]
    labels = torch.arange(n, device=image_features.device) + rank * n  # this rank's rows
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
