"""`openwit takedown DIR`: remove candidates from a released output after the fact.

Candidates are named by image or page URL, uid, or domain (of the image or the page). Their
samples are removed by rewriting only the shards that hold them (every other byte stays),
sizes.json and the shard indexes follow, and one `takedown` row per candidate is appended to
the ledger at a new revision with its time, superseding the kept (or dropped) row. A
candidate taken down once is not taken down again. `openwit audit verify` stays green.

This module decides what to take down; rewriting shards, the ledger's new rows and the
manifest refresh are output/ operations (shards, ledger, manifest).
"""
from __future__ import annotations

import argparse
import json
import sys

from openwit.pipeline.common.flags import lines_file
from openwit.pipeline.common.clock import utc_now
from openwit.pipeline.common.urls import domain_host, host_of, normalize_url
from openwit.pipeline.output import layout, ledger, shards
from openwit.pipeline.output.manifest import update_manifest
from openwit.schemas.record import Record, drop


def matches(row: dict, urls: set, uids: set, domains: set) -> bool:
    """Whether a ledger row is named by the request. A domain covers its subdomains."""
    if row["uid"] in uids:
        return True
    if urls and ({normalize_url(row["url"] or ""), normalize_url(row["page_url"] or "")} & urls):
        return True
    hosts = {host_of(row["url"]), host_of(row["page_url"])} - {""}
    return any(host == d or host.endswith("." + d) for host in hosts for d in domains)


def taken_down_row(row: dict, note: str) -> Record:
    """The superseding record: dropped at `takedown`, no longer in any shard."""
    was = f"; was {row['shard']}/{row['key']}" if row["status"] == "kept" else f"; was {row['status']}"
    return drop(ledger.to_record(row), "takedown", (note or "takedown request") + was).update(shard=None, key=None)


def takedown(out_dir: str, urls=(), uids=(), domains=(), note: str = "") -> dict:
    table = ledger.read_ledger(out_dir)
    state = ledger.current_state(table).to_pylist()
    urls = {normalize_url(u) for u in urls}
    named = [r for r in state if matches(r, urls, set(uids), {domain_host(d) for d in domains})]
    todo = [r for r in named if r["reason"] != "takedown"]
    recorded_at = utc_now()
    revision = ledger.next_revision(table)
    by_shard = {}
    for row in todo:
        if row["status"] == "kept":
            by_shard.setdefault(row["shard"], set()).add(row["key"])
    shards_dir = layout.shards_dir(out_dir)
    sizes = {shard: shards.rewrite_shard(shards_dir, shard, keys) for shard, keys in sorted(by_shard.items())}
    shards.update_sizes(shards_dir, sizes)
    ledger.append_rows(out_dir, [taken_down_row(r, note) for r in todo], revision, recorded_at)
    result = {"at": recorded_at, "revision": revision, "named": len(named), "taken_down": len(todo),
              "samples_removed": sum(len(k) for k in by_shard.values()), "shards_rewritten": sorted(by_shard)}
    update_manifest(out_dir, result)
    return result


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
    result = takedown(args.dir, lines_file(args.urls), lines_file(args.uids), lines_file(args.domains), args.note)
    print(json.dumps(result, indent=1))
    if not result["named"]:
        print("openwit takedown: nothing in the ledger matches", file=sys.stderr)
    return 0
