"""Byte-level tokenizer.

Why bytes rather than CLIP's BPE:
- offline: CLIP's BPE needs a 1.3 MB merges file that would have to be
  downloaded or vendored; this needs nothing.
- honest: every caption, in any language or script, maps to tokens without an
  <unk> and without a vocabulary chosen on someone else's corpus.
- no vocab file: the mapping is fixed by UTF-8, so a checkpoint only has to
  record the description below to be reproducible.
The cost is longer sequences (one token per byte), which matters little for
short alt-text captions; a BPE can replace this later behind the same API.

Token ids: 0 = padding, 1..256 = byte value + 1, 257 = start, 258 = end (EOT).
The text tower pools the features at the EOT position, so everything after it
(padding) is invisible to the causal model.
"""
from __future__ import annotations

import torch

PAD = 0
BYTE_OFFSET = 1
SOT = 257
EOT = 258
VOCAB_SIZE = 259


def encode(text: str, context_length: int) -> list[int]:
    """Token ids for one caption: SOT, UTF-8 bytes, EOT, then padding.

    Captions longer than the context are cut at the byte level (possibly
    mid-character, which is harmless for a byte model); EOT is always kept.
    """
    if context_length < 2:
        raise ValueError("context_length must leave room for start and end tokens")
    body = [b + BYTE_OFFSET for b in text.encode("utf-8")][: context_length - 2]
    ids = [SOT, *body, EOT]
    return ids + [PAD] * (context_length - len(ids))


def tokenize(texts: str | list[str], context_length: int) -> torch.Tensor:
    """A LongTensor [len(texts), context_length]."""
    if isinstance(texts, str):
        texts = [texts]
    return torch.tensor([encode(t, context_length) for t in texts], dtype=torch.long)


def eot_positions(tokens: torch.Tensor) -> torch.Tensor:
    """Index of the EOT token in each row (the text tower pools there)."""
    return (tokens == EOT).int().argmax(dim=-1)


def decode(ids: list[int] | torch.Tensor) -> str:
    """Inverse of encode for the byte part (for debugging and tests)."""
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    data = bytes(i - BYTE_OFFSET for i in ids if BYTE_OFFSET <= i < SOT)
    return data.decode("utf-8", errors="replace")


def describe() -> dict:
    """What a checkpoint stores so the text side can be rebuilt without files."""
    return {
        "kind": "bytes-utf8",
        "vocab_size": VOCAB_SIZE,
        "pad": PAD,
        "byte_offset": BYTE_OFFSET,
        "sot": SOT,
        "eot": EOT,
    }
