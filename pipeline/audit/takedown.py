"""`openwit takedown DIR`: remove candidates from a released output after the fact.

Candidates are named by image or page URL, uid, or domain (of the image or the page). Their
samples are removed by rewriting only the shards that hold them (every other byte stays),
sizes.json and the shard indexes follow, and one `takedown` row per candidate is appended to
the ledger at a new revision with its time, superseding the kept (or dropped) row. A
candidate taken down once is not taken down again. `openwit audit verify` stays green.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import sys
import tarfile
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from openwit.pipeline.output import ledger
from openwit.pipeline.stages.dedup import normalize_url
from openwit.pipeline.output.files import write_atomically
from openwit.pipeline.stages.write import write_sizes
from openwit.schemas.record import Record, drop


def host_of(url) -> str:
    try:
        return (urlsplit(url or "").hostname or "").rstrip(".")
    except ValueError:
        return ""


def matches(row: dict, urls: set, uids: set, domains: set) -> bool:
    """Whether a ledger row is named by the request. A domain covers its subdomains."""
    if row["uid"] in uids:
        return True
    if urls and ({normalize_url(row["url"] or ""), normalize_url(row["page_url"] or "")} & urls):
        return True
    hosts = {host_of(row["url"]), host_of(row["page_url"])} - {""}
    return any(host == d or host.endswith("." + d) for host in hosts for d in domains)


def to_record(row: dict) -> Record:
    fields = {k: v for k, v in row.items() if k not in ("revision", "recorded_at")}
    return Record(**fields)


def taken_down_row(row: dict, note: str) -> Record:
    """The superseding record: dropped at `takedown`, no longer in any shard."""
    was = f"; was {row['shard']}/{row['key']}" if row["status"] == "kept" else f"; was {row['status']}"
    return drop(to_record(row), "takedown", (note or "takedown request") + was).update(shard=None, key=None)


def rewrite_shard(shards_dir: str, shard: str, remove: set) -> int:
    """Rewrite one tar and its index without the samples of `remove`; -> samples left."""
    tar_path = os.path.join(shards_dir, shard + ".tar")
    out = io.BytesIO()
    with tarfile.open(tar_path) as source, tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as dest:
        for member in source:
            if member.name.partition(".")[0] not in remove:
                dest.addfile(member, source.extractfile(member) if member.isfile() else None)
    write_atomically(tar_path, out.getvalue())
    index_path = os.path.join(shards_dir, shard + ".parquet")
    index = pq.read_table(index_path)
    index = index.filter(pc.invert(pc.is_in(index.column("key"), value_set=pa.array(sorted(remove), pa.string()))))
    buffer = io.BytesIO()
    pq.write_table(index, buffer)
    write_atomically(index_path, buffer.getvalue())
    return index.num_rows


def takedown(out_dir: str, urls=(), uids=(), domains=(), note: str = "") -> dict:
    table = ledger.read_ledger(out_dir)
    state = ledger.current_state(table).to_pylist()
    urls = {normalize_url(u) for u in urls}
    named = [r for r in state if matches(r, urls, set(uids), {d.lower().rstrip(".") for d in domains})]
    todo = [r for r in named if r["reason"] != "takedown"]
    recorded_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    revision = max(table.column("revision").to_pylist()) + 1
    by_shard = {}
    for row in todo:
        if row["status"] == "kept":
            by_shard.setdefault(row["shard"], set()).add(row["key"])
    shards_dir = os.path.join(out_dir, "shards")
    sizes = {shard: rewrite_shard(shards_dir, shard, keys) for shard, keys in sorted(by_shard.items())}
    update_sizes(shards_dir, sizes)
    append_rows(out_dir, [taken_down_row(r, note) for r in todo], revision, recorded_at)
    result = {"at": recorded_at, "revision": revision, "named": len(named), "taken_down": len(todo),
              "samples_removed": sum(len(k) for k in by_shard.values()), "shards_rewritten": sorted(by_shard)}
    update_manifest(out_dir, result)
    return result


def update_sizes(shards_dir: str, sizes: dict) -> None:
    recorded = {name[: -len(".tar")]: n for name, n in ledger.read_json(os.path.join(shards_dir, "sizes.json")).items()}
    write_sizes(list({**recorded, **sizes}.items()), shards_dir)


def append_rows(out_dir: str, records: list, revision: int, recorded_at: str) -> None:
    """New rows go to new files of the new revision, partitioned like the run's ledger."""
    ledger_dir = os.path.join(out_dir, ledger.LEDGER_DIR)
    parts = len([p for p in os.listdir(ledger_dir) if p.startswith("rev000-")]) or 1
    by_part = {}
    for record in records:
        by_part.setdefault(ledger.ledger_part(record.uid, parts), []).append(record)
    for part, group in sorted(by_part.items()):
        ledger.write_ledger_part(ledger_dir, part, group, revision, recorded_at)


def update_manifest(out_dir: str, result: dict, log: str = "takedowns", changes=None) -> None:
    """The manifest after a later change to OUT: funnel and shard sizes from the files, the
    given fields replaced, and `result` appended to the `log` list."""
    path = os.path.join(out_dir, "manifest.json")
    manifest = {**ledger.read_json(path), **ledger.outcomes(out_dir), **(changes or {})}
    manifest["shards"] = ledger.read_json(os.path.join(out_dir, "shards", "sizes.json"))
    manifest.setdefault(log, []).append(result)
    write_atomically(path, json.dumps(manifest, indent=1, sort_keys=True).encode())


def read_list(path) -> list:
    if not path:
        return []
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="openwit takedown", description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="output directory of openwit curate")
    parser.add_argument("--urls", help="file of image or page URLs, one a line")
    parser.add_argument("--uids", help="file of uids, one a line")
    parser.add_argument("--domains", help="file of domains (subdomains included), one a line")
    parser.add_argument("--note", default="", help="why (e.g. a ticket number); stored in each row's detail")
    args = parser.parse_args(argv)
    if not (args.urls or args.uids or args.domains):
        parser.error("give --urls, --uids or --domains")
    result = takedown(args.dir, read_list(args.urls), read_list(args.uids), read_list(args.domains), args.note)
    print(json.dumps(result, indent=1))
    if not result["named"]:
        print("openwit takedown: nothing in the ledger matches", file=sys.stderr)
    return 0
