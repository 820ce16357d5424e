"""Deduplication: normalised URL (before download; the form is common/urls.py), exact image
bytes, perceptual near-duplicates, and eval-set decontamination. Plain functions; beam/graph.py
distributes them.

The survivor of an image duplicate group is chosen from content only: the largest original
resolution, then the smallest uid. Every other member is dropped with `duplicate_of` naming
the survivor, so the ledger says where each loser's image went.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Optional

import numpy as np

from openwit.pipeline.common import neardup
from openwit.schemas.record import Record, drop

DEDUP_KEYS = ("image", "image+caption")


def url_dedup_group(records: Iterable[Record]) -> Iterator[Record]:
    """Candidates with one normalised URL: one download for all. The smallest uid survives
    (nothing else is known before download); every loser keeps its own page_url and caption
    in the ledger, so all pages an image was seen on stay on record."""
    survivor = min(record.uid for record in records)
    for record in records:
        yield record if record.uid == survivor else drop(record, "duplicate_url", "", survivor)


def exact_key(record: Record, mode: str) -> str:
    if mode == "image+caption":
        return f"{record.sha256}\x00{' '.join(record.caption.split())}"
    return record.sha256


def cluster_key(cluster: str, record: Record, mode: str) -> str:
    """The near-duplicate group of a record: its pHash cluster, split by caption in
    `image+caption` mode (same image, other caption: not a duplicate there)."""
    return exact_key(record.update(sha256=cluster), mode)


def survivor_order(record: Record) -> tuple:
    return (-(record.original_width or 0) * (record.original_height or 0), record.uid)


def dedup_group(records: Iterable[Record]) -> Iterator[Record]:
    """All records sharing one image sha256 -> the survivor, and the rest dropped.

    Two passes over a re-iterable (a list, or Beam's grouped values) and nothing held: an
    image shared by millions of URLs must not be gathered in one worker's memory."""
    survivor = min(records, key=survivor_order)
    for record in records:
        if record.uid == survivor.uid:
            yield record
        else:
            yield drop(record, "duplicate_image", f"sha256 {record.sha256}", survivor.uid)


def near_dup_group(records: Iterable[Record], k: int,
                   max_colour: float = neardup.DEFAULT_COLOUR_DISTANCE) -> Iterator[Record]:
    """One connected component of pHash near-duplicates (re-iterable) -> its survivors, and
    the rest dropped naming a survivor close to them.

    A component can chain (A~B~C, A far from C), and pHash is colour-blind (a flag and its
    recoloured twin hash alike), so it is split by greedy star clustering over its distinct
    (pHash, colour signature) pairs in survivor order (`neardup.star_centers`): the best
    unclaimed one claims every unclaimed one within k in pHash and within `max_colour` in
    colour (a record without a signature: pHash alone). Its best record survives; every
    other record names the survivor of its star and both distances to it. Survivors are
    pairwise not close. Two passes over the group, holding one entry per distinct
    (pHash, colour signature), not the records."""
    best = {}  # (pHash, colour signature) -> survivor_order of its best record: (-area, uid)
    for record in records:
        look = (record.phash, record.colour_sig)
        if record.phash is not None and (look not in best or survivor_order(record) < best[look]):
            best[look] = survivor_order(record)
    looks = sorted(best, key=best.get)
    values = np.fromiter((int(h, 16) for h, _ in looks), dtype=np.uint64, count=len(looks))
    colours = neardup.colour_values(c for _, c in looks)
    centres = neardup.star_centers(values, k, colours, max_colour)
    centre_of = {look: looks[c] for look, c in zip(looks, centres)}
    for record in records:
        if record.phash is None:  # no hash: its own group (graph.near_dedup keys it by uid)
            yield record
            continue
        centre = centre_of[(record.phash, record.colour_sig)]
        survivor = best[centre][1]
        if record.uid == survivor:
            yield record
        else:
            yield drop(record, "near_duplicate", near_dup_detail(record, centre, survivor), survivor)


def near_dup_detail(record: Record, centre: tuple, survivor: str) -> str:
    """Both distances to the survivor: `phash P at distance D from S of UID, colour distance C`
    (C to one decimal, or `unknown` when either record has no colour signature)."""
    distance = phash_distance(record.phash, centre[0])
    colour = float(neardup.colour_distances(*neardup.colour_values([record.colour_sig, centre[1]])))
    colour_text = "unknown" if np.isnan(colour) else f"{colour:.1f}"
    return f"phash {record.phash} at distance {distance} from {centre[0]} of {survivor}, colour distance {colour_text}"


def phash_distance(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


# --- near-duplicates, distributed: band keys -> verified edges -> components -------------
# Hash values cross Beam as 16-digit hex strings: Beam's integer coder is signed 64-bit.

def top_bands(k: int) -> list[list[int]]:
    """The k+1 bands that spread hashes over workers: any pair within k shares one."""
    return neardup.split_bits(list(range(neardup.HASH_BITS)), k + 1)


def band_keys(phash: str, k: int) -> list[tuple[int, str]]:
    """(band index, the hash's bits in that band) keys of one distinct pHash."""
    value = int(phash, 16)
    return [(index, f"{value & int(neardup.bit_mask(band)):016x}") for index, band in enumerate(top_bands(k))]


def edges_in_band(band_index: int, phashes: Iterable[str], k: int) -> list[tuple[str, str]]:
    """Verified pairs (a < b) within distance k among pHashes sharing one band; the kernel
    buckets on the other bits, splitting a giant group instead of comparing all pairs."""
    # Streamed into 8 bytes a value: a hot band value may hold millions of hashes.
    values = np.unique(np.fromiter((int(h, 16) for h in phashes), dtype=np.uint64))
    rest = [bit for i, band in enumerate(top_bands(k)) if i != band_index for bit in band]
    pairs = neardup.near_duplicate_pairs(values, k, positions=rest)
    # A pair sharing several bands is found in each band's group: keep it in its first only,
    # so the one global components step gets every edge once.
    earlier = [neardup.bit_mask(band) for band in top_bands(k)[:band_index]]
    pairs = neardup.first_found(values, pairs, earlier)
    return [(f"{values[i]:016x}", f"{values[j]:016x}") for i, j in pairs]


def cluster_labels(edges: Iterable[tuple[str, str]]) -> dict[str, str]:
    """pHash -> smallest pHash of its connected component, for every pHash that has an
    edge (one with none is its own cluster). Independent of edge order and repeats. A
    component only routes its records to one `near_dup_group`, which splits it into stars."""
    edges = sorted(set(edges))
    values = sorted({h for edge in edges for h in edge})  # fixed-width hex sorts as numbers
    index = {h: i for i, h in enumerate(values)}
    pairs = np.array([(index[a], index[b]) for a, b in edges], dtype=np.int64).reshape(-1, 2)
    labels = neardup.components(len(values), pairs)
    return {h: values[label] for h, label in zip(values, labels)}


# --- decontamination against an eval set's hashes ---------------------------------------

# The hashes file's metadata key for its hash method: decontamination compares like with like.
HASH_METHOD_KEY = b"openwit.hash_method"


def hash_method_of(path: str) -> str:
    """The perceptual hash method a hashes.parquet was written with."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    if HASH_METHOD_KEY not in metadata:
        raise ValueError(f"{path} was not written by `openwit hashes export` (no hash method recorded)")
    return metadata[HASH_METHOD_KEY].decode()


def content_distance(near_dup_distance: int) -> int:
    """The pHash distance at which a picture matches a listed one (eval set, takedowns): the
    run's near-dup distance, or exact pHash matches only when near-dup dedup is off."""
    return max(near_dup_distance, 0)


class EvalHashes:
    """Perceptual hashes to match pictures against: an evaluation set (`openwit hashes
    export`, pHash only) or the takedown blocklist (with colour signatures, so a match follows
    the near-duplicate rule: close in pHash, and in colour where both sides have one)."""

    def __init__(self, items: list[str], phashes: list[str], colour_sigs: Optional[list] = None):
        self.items = items
        self.values = np.array([int(h, 16) for h in phashes], dtype=np.uint64)
        self.colours = neardup.colour_values(colour_sigs) if colour_sigs else None

    @classmethod
    def load(cls, path: str) -> "EvalHashes":
        import pyarrow.parquet as pq

        rows = pq.read_table(path, columns=["item", "phash"]).to_pylist()
        hashed = [row for row in rows if row["phash"]]  # rows of unreadable eval images have none
        return cls([row["item"] for row in hashed], [row["phash"] for row in hashed])

    def nearest(self, phash: str, k: int, colour_sig: Optional[str] = None) -> Optional[tuple[str, int]]:
        """(item, distance) of the closest listed image within k (and close in colour), else
        None. Linear in the list (~1 ms per candidate at 1M hashes): small next to a download."""
        if not len(self.values):
            return None
        distance = np.bitwise_count(self.values ^ np.uint64(int(phash, 16))).astype(np.int64)
        if self.colours is not None and colour_sig:
            apart = neardup.colour_distances(self.colours, neardup.colour_values([colour_sig])[0])
            distance[~neardup.colour_close(apart, neardup.DEFAULT_COLOUR_DISTANCE)] = k + 1
        best = int(np.argmin(distance))  # ties: the first item, so the answer is stable
        return (self.items[best], int(distance[best])) if distance[best] <= k else None


def decontaminate(record: Record, eval_hashes: EvalHashes, k: int) -> Record:
    if record.phash is None:
        return record
    hit = eval_hashes.nearest(record.phash, k)
    if hit is None:
        return record
    item, distance = hit
    return drop(record, "eval_contamination", f"eval item {item} at phash distance {distance}")
