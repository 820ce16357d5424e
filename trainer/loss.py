"""Symmetric InfoNCE, the CLIP objective.

Row i of the image batch and row i of the text batch are a positive pair;
every other row in the batch is a negative. The loss is the mean of
"pick the right caption for each image" and "pick the right image for each
caption" cross-entropies.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gather_features(image_features: torch.Tensor, text_features: torch.Tensor):
    """Features from every process, so each sees the global batch as negatives.

    Single-process for now, so this is the identity. Under DDP (torchrun) this
    is where an all-gather goes, keeping the local tensors in place so their
    gradients flow (as open_clip's gather_features does).
    """
    return image_features, text_features


def clip_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE on L2-normalised features.

    logit_scale is the *log* temperature parameter; logits = exp(logit_scale) * img @ txt.T.
    """
    all_images, all_texts = gather_features(image_features, text_features)
    scale = logit_scale.exp()
    logits_per_image = scale * image_features @ all_texts.T
    logits_per_text = scale * text_features @ all_images.T
    labels = torch.arange(image_features.shape[0], device=image_features.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
