"""A tiny CLIP in one file: a ViT image tower, a causal text transformer,
and a learnable temperature.

The shapes follow OpenAI CLIP (pre-LayerNorm blocks, class token for images,
EOT pooling for text, bias-free projections into a shared space), so growing
it to ViT-B/32 is a matter of config numbers, not code.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.utils.checkpoint
import torch.nn.functional as F

from .config import TrainConfig
from .tokenizer import VOCAB_SIZE, describe, eot_positions

# CLIP's initial temperature 0.07, and the cap that keeps logits from blowing up.
LOGIT_SCALE_INIT = math.log(1 / 0.07)
LOGIT_SCALE_MAX = math.log(100)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, causal: bool):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.causal = causal
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=-1)
        # [batch, heads, length, head_dim], the layout SDPA expects
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out(y.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    """Pre-LayerNorm transformer block, as in CLIP and GPT-2."""

    def __init__(self, width: int, heads: int, causal: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, causal)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


def run_blocks(blocks, x: torch.Tensor, checkpointing: bool) -> torch.Tensor:
    """Apply the blocks; with checkpointing, keep only block inputs for the backward and
    recompute the rest (memory of one block instead of all)."""
    for block in blocks:
        if checkpointing and x.requires_grad:
            x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        else:
            x = block(x)
    return x


class VisionTransformer(nn.Module):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        if cfg.image_size % cfg.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")
        width = cfg.vision_width
        num_patches = (cfg.image_size // cfg.patch_size) ** 2
        # A strided conv is exactly "cut into patches, then a shared linear layer".
        self.patch_embedding = nn.Conv2d(3, width, cfg.patch_size, cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(num_patches + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(
            Block(width, cfg.vision_heads, causal=False) for _ in range(cfg.vision_layers)
        )
        self.checkpointing = cfg.grad_checkpointing
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Linear(width, cfg.embed_dim, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(images).flatten(2).transpose(1, 2)  # [B, patches, width]
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = run_blocks(self.blocks, self.ln_pre(x), self.checkpointing)
        return self.proj(self.ln_post(x[:, 0]))  # the class token summarises the image


class TextTransformer(nn.Module):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        width = cfg.text_width
        self.token_embedding = nn.Embedding(VOCAB_SIZE, width)
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.context_length, width))
        self.blocks = nn.ModuleList(
            Block(width, cfg.text_heads, causal=True) for _ in range(cfg.text_layers)
        )
        self.checkpointing = cfg.grad_checkpointing
        self.ln_final = nn.LayerNorm(width)
        self.proj = nn.Linear(width, cfg.embed_dim, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]
        x = self.ln_final(run_blocks(self.blocks, x, self.checkpointing))
        # Causal attention means the EOT position has seen the whole caption and
        # none of the padding, so it is the caption's summary.
        pooled = x[torch.arange(x.shape[0], device=x.device), eot_positions(tokens)]
        return self.proj(pooled)


class CLIP(nn.Module):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.visual = VisionTransformer(cfg)
        self.text = TextTransformer(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))
        self.apply(_init_weights)
        for module in (self.visual, self.text):
            nn.init.normal_(module.positional_embedding, std=0.01)
        nn.init.normal_(self.visual.class_embedding, std=0.02)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(images), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(tokens), dim=-1)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor):
        """Unit-length image and text embeddings, plus the log temperature."""
        return self.encode_image(images), self.encode_text(tokens), self.logit_scale

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """CLIP caps the temperature at 100 so training stays stable."""
        self.logit_scale.clamp_(0, LOGIT_SCALE_MAX)


def _init_weights(module: nn.Module) -> None:
    """Weights with std 1/sqrt(fan_in), CLIP's width**-0.5 rule.

    This keeps activations at unit scale whatever the width; a fixed 0.02
    (GPT-2's choice) is far too small for a 64-wide model, whose attention then
    starts almost uniform and learns several times slower.
    """
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        fan_in = module.weight[0].numel()
        nn.init.normal_(module.weight, std=fan_in**-0.5)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


# ------------------------------------------------------------- checkpoints

CHECKPOINT_FORMAT = "openwit-clip/1"


def save_checkpoint(path: str, model: CLIP, cfg: TrainConfig, **extra) -> None:
    """Weights, the config that builds them, and the tokenizer they expect.

    Only tensors and plain Python values, so `torch.load(weights_only=True)`
    can read it without unpickling arbitrary objects.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": state,
        "config": cfg.to_dict(),
        "tokenizer": describe(),
        **extra,
    }
    torch.save(payload, path)


def load_checkpoint(path: str, device: str = "cpu") -> tuple[CLIP, TrainConfig]:
    """The model (in eval mode) and its config, from save_checkpoint's file."""
    payload = torch.load(path, map_location=device, weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an {CHECKPOINT_FORMAT} checkpoint")
    if payload["tokenizer"] != describe():
        raise ValueError(f"{path} was trained with another tokenizer: {payload['tokenizer']}")
    cfg = TrainConfig.from_dict(payload["config"])
    model = CLIP(cfg)
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), cfg
