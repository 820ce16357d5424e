"""Zero-shot classification of a held-out labelled image folder.

    openwit evaluate --checkpoint CKPT --heldout DIR

DIR holds `labels.csv` (header `file,label`, file relative to DIR) and the
images. Each class gets a text embedding: the mean of its prompts ("a photo
of a {}.", ...), renormalised, as in the CLIP paper's prompt ensembling. An
image is assigned the class with the highest cosine similarity.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from .data import eval_transform
from .model import CLIP, load_checkpoint
from .tokenizer import tokenize

TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a {}.",
    "{}",
)


def read_labels(heldout_dir: str | Path) -> list[tuple[Path, str]]:
    heldout_dir = Path(heldout_dir)
    with open(heldout_dir / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = [(heldout_dir / row["file"], row["label"].strip()) for row in csv.DictReader(handle)]
    if not rows:
        raise ValueError(f"{heldout_dir}/labels.csv lists no images")
    return rows


@torch.no_grad()
def class_embeddings(model: CLIP, classnames: list[str], templates, context_length: int) -> torch.Tensor:
    """[num_classes, embed_dim], one prompt-ensembled unit vector per class."""
    device = model.logit_scale.device
    per_class = []
    for name in classnames:
        tokens = tokenize([t.format(name) for t in templates], context_length).to(device)
        per_class.append(model.encode_text(tokens).mean(dim=0))
    return F.normalize(torch.stack(per_class), dim=-1)


@torch.no_grad()
def zero_shot_accuracy(
    checkpoint: str, heldout_dir: str, device: str = "cpu", templates=TEMPLATES, batch_size: int = 64
) -> float:
    """Fraction of held-out images whose nearest class prompt is their label."""
    model, cfg = load_checkpoint(checkpoint, device)
    rows = read_labels(heldout_dir)
    classnames = sorted({label for _, label in rows})
    text = class_embeddings(model, classnames, templates, cfg.context_length)
    correct = 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        images = torch.stack([eval_transform(Image.open(path), cfg.image_size) for path, _ in chunk])
        predicted = (model.encode_image(images.to(device)) @ text.T).argmax(dim=-1).tolist()
        correct += sum(classnames[p] == label for p, (_, label) in zip(predicted, chunk))
    return correct / len(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openwit evaluate", description="Zero-shot accuracy of a CLIP checkpoint."
    )
    parser.add_argument("--checkpoint", required=True, help="file written by openwit train")
    parser.add_argument("--heldout", required=True, metavar="DIR", help="folder with labels.csv and images")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    accuracy = zero_shot_accuracy(args.checkpoint, args.heldout, device=args.device)
    num_classes = len({label for _, label in read_labels(args.heldout)})
    print(f"zero-shot accuracy {accuracy:.4f} over {num_classes} classes (chance {1 / num_classes:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
