"""WebDataset input pipeline: shard directory -> batches of (images, tokens).

A shard directory is `DIR/*.tar` whose members are `KEY.jpg|jpeg|png|webp`,
`KEY.txt` (caption) and optionally `KEY.json`, plus an optional
`DIR/sizes.json` mapping shard basename -> sample count. That is the layout
our pipeline writes and the one open_clip's `--train-data` accepts.

Determinism: shard order and the shuffle buffer use generators seeded from
(seed, epoch); each sample's random crop uses a generator seeded from
(seed, epoch, sample key), so augmentation does not depend on which worker
process happened to load the sample. Seeds are strings, which `random.Random`
hashes with SHA-512, never Python's per-process salted hash().
"""
from __future__ import annotations

import functools
import io
import json
import logging
import math
import random
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from openwit.pipeline.common.keyed import uniform
from openwit.pipeline.output import layout
from openwit.pipeline.stages.balance import count_entries, keep_probability

from .config import TrainConfig
from .loss import world
from .tokenizer import encode

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
# The normalisation OpenAI CLIP was trained with; kept so checkpoints stay comparable.
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


# ---------------------------------------------------------------- shards


def list_shards(shards_dir: str | Path) -> list[str]:
    shards = sorted(str(p) for p in Path(shards_dir).glob("*.tar"))
    if not shards:
        raise FileNotFoundError(f"no *.tar shards in {shards_dir}")
    return shards


def count_samples(shards_dir: str | Path) -> int:
    """Samples in the directory: from sizes.json, else by reading the tars."""
    sizes_path = Path(layout.sizes_path(shards_dir))
    sizes = json.loads(sizes_path.read_text()) if sizes_path.exists() else {}
    total = 0
    for shard in list_shards(shards_dir):
        name = Path(shard).name
        total += int(sizes[name]) if name in sizes else _count_tar(shard)
    return total


def _count_tar(path: str) -> int:
    """Keys that have both an image and a caption (what the loader will yield)."""
    # Imported here: the shard module brings Beam (for remote outputs), which training only
    # needs for a shard that sizes.json does not count.
    from openwit.pipeline.output.shards import tar_members

    members: dict[str, set[str]] = {}
    for key, ext, _, _ in tar_members(path):
        members.setdefault(key, set()).add(ext.lower())
    return sum(1 for exts in members.values() if "txt" in exts and exts & set(IMAGE_EXTENSIONS))


# ----------------------------------------------------- online balancing


@functools.lru_cache(maxsize=4)
def entry_counts(shards: tuple[str, ...]) -> np.ndarray:
    """Matches per vocabulary entry over the shards (dense, by entry id), read from each
    shard's Parquet index, which openwit writes next to the tar."""
    import pyarrow.parquet as pq

    entry_id_lists = []
    for shard in shards:
        index = Path(shard).with_suffix(".parquet")
        if not index.exists():
            raise FileNotFoundError(f"online balancing needs openwit's Parquet index next to {shard}")
        entry_id_lists += [ids or () for ids in pq.read_table(index, columns=["entry_ids"]).column("entry_ids").to_pylist()]
    return count_entries(entry_id_lists, vocab_size=1)  # the curation's own counter; length = largest id + 1


def epoch_draw(seed: int, epoch: int, key: str) -> float:
    """A uniform number in [0, 1) per (seed, epoch, sample): each epoch draws anew."""
    return uniform(f"{seed}:{epoch}:{key}".encode("utf-8"), b"openwit-online")


def balanced_epoch(samples, counts: np.ndarray, threshold: int, seed: int, epoch: int):
    """Keep each sample with its balancing probability for this epoch."""
    for sample in samples:
        entry_ids = json.loads(sample.get("json", b"{}")).get("entry_ids") or []
        p = keep_probability(entry_ids, counts, threshold) if entry_ids else 0.0
        if epoch_draw(seed, epoch, sample["__key__"]) < p:
            yield sample


# ------------------------------------------------------------ transforms


def random_resized_crop(
    img: Image.Image, size: int, rng: random.Random, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3)
) -> Image.Image:
    """torchvision's RandomResizedCrop, with open_clip's training scale range.

    Pick an area fraction and an aspect ratio, and take that box at a random
    place; fall back to the centre crop if ten tries do not fit.
    """
    width, height = img.size
    for _ in range(10):
        area = width * height * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = round(math.sqrt(area * aspect))
        h = round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return img.resize((size, size), Image.BICUBIC, box=(left, top, left + w, top + h))
    return center_crop(img, size)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` and take the centre square.

    Done as one resize of the centred square, which is the same thing.
    """
    width, height = img.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return img.resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> normalised float tensor [3, H, W]."""
    pixels = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)
    return (pixels.float() / 255 - CLIP_MEAN) / CLIP_STD


def train_transform(img: Image.Image, size: int, rng: random.Random) -> torch.Tensor:
    return to_tensor(random_resized_crop(img.convert("RGB"), size, rng))


def eval_transform(img: Image.Image, size: int) -> torch.Tensor:
    return to_tensor(center_crop(img.convert("RGB"), size))


# -------------------------------------------------------------- pipeline


def decode_samples(samples, image_size: int, context_length: int, seed: int, epoch: int, train: bool):
    """Raw tar samples -> (image tensor, token tensor); skips unusable ones."""
    for sample in samples:
        image_ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
        if image_ext is None or "txt" not in sample:
            continue
        try:
            img = Image.open(io.BytesIO(sample[image_ext]))
            if train:
                rng = random.Random(f"crop:{seed}:{epoch}:{sample['__key__']}")
                image = train_transform(img, image_size, rng)
            else:
                image = eval_transform(img, image_size)
            caption = sample["txt"].decode("utf-8").strip()
        except Exception as exc:  # a corrupt image must not kill a long run
            log.warning("skipping %s from %s: %s", sample.get("__key__"), sample.get("__url__"), exc)
            continue
        yield image, torch.tensor(encode(caption, context_length), dtype=torch.long)


def rank_shards(shards: list[str], rank: int, world_size: int) -> list[str]:
    """This rank's shards: every world_size-th one, so ranks never share a shard. Each rank
    needs at least one (and, with DataLoader workers, one per worker)."""
    if len(shards) < world_size:
        raise ValueError(f"{len(shards)} shards cannot feed {world_size} ranks without repeating samples; "
                         "write more, smaller shards (--samples-per-shard)")
    return shards[rank::world_size]


def sample_pipeline(cfg: TrainConfig, epoch: int = 0, train: bool = True) -> wds.DataPipeline:
    """One pass over the shards, yielding (image [3,S,S], tokens [L]) pairs."""
    shards = list_shards(cfg.shards)
    stages = []
    if train:
        random.Random(f"shards:{cfg.seed}:{epoch}").shuffle(shards)  # the same order on every rank
        shards = rank_shards(shards, *world())
    stages += [wds.SimpleShardList(shards), wds.split_by_worker, wds.tarfile_to_samples()]
    if train and cfg.online_balance:
        counts = entry_counts(tuple(list_shards(cfg.shards)))  # the whole pool, on every rank
        stages.append(functools.partial(balanced_epoch, counts=counts, threshold=cfg.online_balance,
                                        seed=cfg.seed, epoch=epoch))
    if train:
        # Tar order is write order; the buffer breaks up runs of similar samples.
        rng = random.Random(f"shuffle:{cfg.seed}:{epoch}")
        stages.append(wds.shuffle(cfg.shuffle_buffer, initial=cfg.shuffle_buffer, rng=rng))
    stages.append(
        functools.partial(
            decode_samples,
            image_size=cfg.image_size,
            context_length=cfg.context_length,
            seed=cfg.seed,
            epoch=epoch,
            train=train,
        )
    )
    return wds.DataPipeline(*stages)


def epoch_loader(cfg: TrainConfig, epoch: int) -> torch.utils.data.DataLoader:
    """Full batches for one training epoch (the last partial batch is dropped
    so every step sees the same number of negatives)."""
    pipeline = sample_pipeline(cfg, epoch, train=True).compose(
        wds.batched(cfg.batch_size, partial=False)
    )
    return torch.utils.data.DataLoader(
        pipeline,
        batch_size=None,  # the pipeline already batches
        num_workers=cfg.num_workers,
        pin_memory=cfg.device == "cuda",
    )


def train_batches(cfg: TrainConfig, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches: epoch after epoch, each with its own seed. `skip`: batches already
    consumed (a resumed run): the order is a function of the seed, so skipping them lands
    on the exact next batch. Whole epochs are skipped without reading them."""
    num_samples = count_samples(cfg.shards)
    if num_samples < cfg.batch_size:
        raise ValueError(f"{num_samples} samples in {cfg.shards} is fewer than batch_size {cfg.batch_size}")
    epoch, per_epoch = 0, None
    while True:
        if per_epoch and skip >= per_epoch:
            epoch, skip = epoch + 1, skip - per_epoch
            continue
        yielded = 0
        for images, tokens in epoch_loader(cfg, epoch):
            yielded += 1
            if yielded > skip:
                yield images, tokens
        # With online balancing each epoch has its own length: never skip one unread.
        per_epoch, skip = (None if cfg.online_balance else yielded), max(0, skip - yielded)
        if yielded == 0:
            raise RuntimeError(f"epoch {epoch} produced no full batch from {cfg.shards}")
        epoch += 1
