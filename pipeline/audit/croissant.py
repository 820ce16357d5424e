"""`openwit audit croissant DIR -o croissant.json`: Croissant (ML Commons) metadata for an
output directory, written with the `mlcroissant` library (`pip install 'openwit[croissant]'`).

Three file sets: the WebDataset tars, the per-shard Parquet indexes (one record per
sample: the `samples` record set) and the ledger (one record per candidate: `ledger`).
Provenance comes from the manifest: inputs and their sha256, the vocabulary, the filters
and their settings, the funnel and the balancing threshold; Croissant's RAI fields carry it.
Paths are relative to OUT, so croissant.json belongs in OUT (it is written there by default).
"""
from __future__ import annotations

import datetime as dt
import json
import os

from openwit.pipeline import __version__
from openwit.pipeline.output import layout
from openwit.pipeline.output.manifest import read_manifest

SAMPLE_FIELDS = [  # (parquet column, Croissant data type, description)
    ("key", "Text", "WebDataset key of the sample (the candidate's uid)"),
    ("uid", "Text", "stable id of the input row"),
    ("url", "URL", "image URL the image was downloaded from"),
    ("caption", "Text", "alt-text, as found"),
    ("page_url", "URL", "page the image was found on"),
    ("source", "Text", "input file and row"),
    ("sha256", "Text", "sha256 of the original image bytes"),
    ("stored_sha256", "Text", "sha256 of the image bytes stored in the shard"),
    ("language", "Text", "fastText lid.176 language of the caption"),
    ("phash", "Text", "64-bit perceptual hash, hex"),
]
LEDGER_COLUMNS = [
    ("uid", "Text", "stable id of the input row"),
    ("url", "URL", "image URL"),
    ("status", "Text", "kept or dropped"),
    ("stage", "Text", "stage that dropped the candidate"),
    ("reason", "Text", "drop reason (schemas/reasons.py)"),
    ("duplicate_of", "Text", "uid of the kept duplicate"),
]


def record_set(mlc, name: str, file_set: str, fields: list, description: str):
    return mlc.RecordSet(
        id=name, name=name, description=description,
        fields=[mlc.Field(id=f"{name}/{column}", name=column, description=text,
                          data_types=[getattr(mlc.DataType, "URL" if kind == "URL" else "TEXT")],
                          source=mlc.Source(file_set=file_set, extract=mlc.Extract(column=column)))
                for column, kind, text in fields],
    )


def input_digest_text(described: dict) -> str:
    """A local input is named by its sha256; a remote one by its store's checksum and size."""
    if "sha256" in described:
        return f"sha256 {described['sha256']}"
    return f"checksum {described['checksum']}, {described['size']} bytes"


def provenance(manifest: dict) -> dict:
    config = manifest.get("config", {})
    inputs = "; ".join(f"{i['path']} ({input_digest_text(i)})" for i in manifest.get("inputs", []))
    balancing = manifest.get("balancing", {})
    return {
        "data_collection": f"Web image/alt-text candidates read from: {inputs}. Images downloaded by openwit "
                           f"{manifest.get('openwit_version')} honouring X-Robots-Tag opt-outs.",
        "data_preprocessing_protocol": [
            f"text rules: {json.dumps(config.get('text', {}), sort_keys=True)}",
            f"vocabulary matching against {manifest['vocab']['entries']} entries "
            f"(sha256 {manifest['vocab']['sha256']})",
            f"MetaCLIP balancing: t = {balancing.get('threshold')} ({balancing.get('rule')}), seed {manifest.get('seed')}",
            f"image rules: {json.dumps(config.get('image', {}), sort_keys=True)}",
            f"dedup: exact {config.get('exact_dedup')}, near-duplicate distance {config.get('near_dup_distance')}, "
            f"decontamination {json.dumps(manifest.get('decontaminate'))}",
            f"funnel: {json.dumps(manifest.get('funnel', {}))}",
        ],
        "data_limitations": ["Captions are web alt-texts, unreviewed; images keep their owners' rights.",
                             "Takedowns after release are in the ledger (reason takedown)."],
    }


def build_metadata(out_dir: str, license_text=None):
    import mlcroissant as mlc

    manifest = read_manifest(out_dir)
    if manifest is None:
        raise FileNotFoundError(f"no manifest in {out_dir}: run openwit curate first")
    kept = manifest.get("funnel", {}).get("kept", 0)
    shards = layout.shards_dir("")  # the file sets name paths relative to OUT
    distribution = [
        mlc.FileSet(id="shards-tar", name="shards-tar", encoding_formats=["application/x-tar"],
                    includes=[layout.tar_pattern(shards)], description="WebDataset shards: KEY.jpg, KEY.txt, KEY.json"),
        mlc.FileSet(id="shards-index", name="shards-index", encoding_formats=["application/x-parquet"],
                    includes=[layout.index_pattern(shards)], description="one row per sample of each shard"),
        mlc.FileSet(id="ledger-parts", name="ledger-parts", encoding_formats=["application/x-parquet"],
                    includes=[layout.ledger_pattern("")], description="one terminal row per candidate per revision"),
    ]
    return mlc.Metadata(
        name=os.path.basename(os.path.abspath(out_dir)) or "openwit-dataset",
        description=f"Image-text pairs curated by openwit {__version__} from web candidates: "
                    f"{kept} samples kept of {manifest.get('funnel', {}).get('candidates', 0)} candidates.",
        url="https://github.com/openwit/openwit",
        license=[license_text or "Unspecified: images and captions keep their owners' rights"],
        version=__version__,
        cite_as="openwit: an open, auditable rebuild of CLIP's WebImageText curation (manifest.json in this "
                "directory records the exact command, inputs and vocabulary)",
        date_published=dt.datetime.fromisoformat(manifest.get("finished_at")) if manifest.get("finished_at") else None,
        distribution=distribution,
        record_sets=[record_set(mlc, "samples", "shards-index", SAMPLE_FIELDS, "one record per kept sample"),
                     record_set(mlc, "ledger", "ledger-parts", LEDGER_COLUMNS, "the ledger's rows (all revisions)")],
        **provenance(manifest),
    )


def write_croissant(out_dir: str, output: str, license_text=None) -> dict:
    metadata = build_metadata(out_dir, license_text)
    document = metadata.to_json()
    with open(output, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=1, default=str)
    return document
