"""Evaluation: zero-shot classification and image<->text retrieval.

    openwit eval --checkpoint CKPT [--heldout DIR] [--retrieval-shards DIR]

Zero-shot: DIR holds `labels.csv` (header `file,label`, file relative to DIR) and
the images, or DIR is a shard directory whose samples carry a label (a `cls`
member, as webdataset classification sets have, or `label` in KEY.json). Each
class gets a text embedding: the mean of its prompts ("a photo of a {}.", ...),
renormalised, as in the CLIP paper's prompt ensembling. An image is assigned
the class with the highest cosine similarity.

Retrieval: on held-out shards, recall@1/5/10 of the right caption for each
image (image->text) and of the right image for each caption (text->image),
among all the samples read.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
from pathlib import Path

import torch
import torch.nn.functional as F
import webdataset as wds
from PIL import Image

from .data import IMAGE_EXTENSIONS, eval_transform, list_shards, sample_pipeline
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


def labelled_images(heldout: str | Path) -> list[tuple[Image.Image, str]]:
    """(image, label) pairs from a labels.csv folder or from labelled shards."""
    heldout = Path(heldout)
    if (heldout / "labels.csv").exists():
        return [(Image.open(path), label) for path, label in read_labels(heldout)]
    pairs = []
    for sample in wds.WebDataset(list_shards(heldout), shardshuffle=False):
        image_ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
        label = sample_label(sample)
        if image_ext and label is not None:
            pairs.append((Image.open(io.BytesIO(sample[image_ext])), label))
    if not pairs:
        raise ValueError(f"{heldout} has neither labels.csv nor shard samples with a cls or json label")
    return pairs


def sample_label(sample: dict):
    if "cls" in sample:
        return sample["cls"].decode("utf-8").strip()
    if "json" in sample:
        label = json.loads(sample["json"]).get("label")
        return None if label is None else str(label)
    return None


@torch.no_grad()
def zero_shot_predictions(model: CLIP, cfg, pairs: list, templates=TEMPLATES, batch_size: int = 64) -> list[tuple[str, str]]:
    """(label, predicted class) per image: the nearest class prompt among the pairs' labels."""
    device = model.logit_scale.device
    classnames = sorted({label for _, label in pairs})
    text = class_embeddings(model, classnames, templates, cfg.context_length)
    out = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        images = torch.stack([eval_transform(image, cfg.image_size) for image, _ in chunk])
        predicted = (model.encode_image(images.to(device)) @ text.T).argmax(dim=-1).tolist()
        out += [(label, classnames[p]) for p, (_, label) in zip(predicted, chunk)]
    return out


def zero_shot(model: CLIP, cfg, pairs: list, templates=TEMPLATES, batch_size: int = 64) -> float:
    """Fraction of images whose nearest class prompt is their label."""
    predictions = zero_shot_predictions(model, cfg, pairs, templates, batch_size)
    return sum(label == predicted for label, predicted in predictions) / len(predictions)


def per_class_accuracy(predictions: list[tuple[str, str]]) -> dict[str, float]:
    totals, right = {}, {}
    for label, predicted in predictions:
        totals[label] = totals.get(label, 0) + 1
        right[label] = right.get(label, 0) + (label == predicted)
    return {label: right[label] / totals[label] for label in sorted(totals)}


def zero_shot_accuracy(checkpoint: str, heldout_dir: str, device: str = "cpu", templates=TEMPLATES) -> float:
    model, cfg = load_checkpoint(checkpoint, device)
    return zero_shot(model, cfg, labelled_images(heldout_dir), templates)


@torch.no_grad()
def retrieval_recall(model: CLIP, cfg, shards_dir: str, ks=(1, 5, 10), max_samples: int = 5000) -> dict:
    """{"image_to_text_R@k": ..., "text_to_image_R@k": ...} over the first max_samples
    held-out samples (eval transform, no shuffle)."""
    device = model.logit_scale.device
    eval_cfg = dataclasses.replace(cfg, shards=str(shards_dir))
    images, texts = [], []
    batches = sample_pipeline(eval_cfg, train=False).compose(wds.batched(256, partial=True))
    for image_batch, token_batch in batches:
        images.append(model.encode_image(image_batch.to(device)))
        texts.append(model.encode_text(token_batch.to(device)))
        if sum(len(b) for b in images) >= max_samples:
            break
    image_f = torch.cat(images)[:max_samples]
    text_f = torch.cat(texts)[:max_samples]
    similarity = image_f @ text_f.T
    truth = torch.arange(len(image_f), device=similarity.device)
    result = {"samples": len(image_f)}
    for direction, scores in (("image_to_text", similarity), ("text_to_image", similarity.T)):
        # rank of the right answer: how many candidates score strictly higher
        rank = (scores > scores[truth, truth].unsqueeze(1)).sum(dim=1)
        for k in ks:
            result[f"{direction}_R@{k}"] = (rank < k).float().mean().item()
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openwit eval", description="Zero-shot accuracy and retrieval recall of a CLIP checkpoint."
    )
    parser.add_argument("--checkpoint", required=True, help="file written by openwit train")
    parser.add_argument("--heldout", metavar="DIR", help="labels.csv folder, or shards with cls/json labels")
    parser.add_argument("--retrieval-shards", metavar="DIR", help="held-out shards for image<->text recall@1/5/10")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.heldout or args.retrieval_shards):
        parser.error("give --heldout and/or --retrieval-shards")
    model, cfg = load_checkpoint(args.checkpoint, args.device)
    if args.heldout:
        pairs = labelled_images(args.heldout)
        num_classes = len({label for _, label in pairs})
        accuracy = zero_shot(model, cfg, pairs)
        print(f"zero-shot accuracy {accuracy:.4f} over {num_classes} classes (chance {1 / num_classes:.4f})")
    if args.retrieval_shards:
        recall = retrieval_recall(model, cfg, args.retrieval_shards)
        print(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in recall.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
