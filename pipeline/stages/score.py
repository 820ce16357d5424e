"""Model-score filter: the cosine between an openwit checkpoint's image and caption
embeddings (DataComp's CLIP-score filter, with a model the user trained), recorded for
every pair that reaches it and compared with --min-score.

It scores the staged (resized) image, the one the shard will hold, one pair at a time: a
tiny model takes ~2 ms a pair on a CPU core, small next to the download.
"""
from __future__ import annotations

import io

import torch
from PIL import Image

from openwit.pipeline.output.files import read_file
from openwit.schemas.record import Record, drop
from openwit.trainer.data import eval_transform
from openwit.trainer.model import load_checkpoint
from openwit.trainer.tokenizer import encode


class Scorer:
    def __init__(self, checkpoint: str):
        self.model, self.cfg = load_checkpoint(checkpoint, "cpu")

    @torch.no_grad()
    def score(self, image: Image.Image, caption: str) -> float:
        pixels = eval_transform(image, self.cfg.image_size).unsqueeze(0)
        tokens = torch.tensor([encode(caption, self.cfg.context_length)], dtype=torch.long)
        return float((self.model.encode_image(pixels) * self.model.encode_text(tokens)).sum())


def score_record(record: Record, scorer: Scorer, min_score: float) -> Record:
    with Image.open(io.BytesIO(read_file(record.image_path))) as image:
        value = round(scorer.score(image, record.caption), 6)
    record = record.update(clip_score=value)
    if value < min_score:
        return drop(record, "low_clip_score", f"{value:.4f} < {min_score}")
    return record
