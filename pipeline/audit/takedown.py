"""`openwit takedown DIR`: remove candidates from a released output after the fact.

Candidates are named by image or page URL, uid, or domain (of the image or the page). Their
samples are removed by rewriting only the shards that hold them (every other byte stays),
sizes.json and the shard indexes follow, and one `takedown` row per candidate is appended to
the ledger at a new revision with its time, superseding the kept (or dropped) row. A
candidate taken down once is not taken down again. `openwit audit verify` stays green.

What was removed is added to OUT's blocklist (stages/blocklist.py: uids, URLs, domains, and
the sha256s and pHash of every removed candidate's image), which every later run on OUT
applies, and the removed candidates' receipts and staged images leave OUT's staging, so a
later --extend cannot publish them again from there.

This module decides what to take down; rewriting shards, the ledger's new rows and the
manifest refresh are output/ operations (shards, ledger, manifest).
"""
from __future__ import annotations

import json
import sys

from openwit.pipeline.common import progress
from openwit.pipeline.common.errors import OneLineParser, UserError, check_output_dir
from openwit.pipeline.common.flags import lines_file
from openwit.pipeline.common.clock import utc_now
from openwit.pipeline.config import CurateConfig
from openwit.pipeline.download import staging
from openwit.pipeline.output import files, layout, ledger, shards
from openwit.pipeline.output.manifest import read_manifest, update_manifest
from openwit.pipeline.stages.blocklist import Blocklist, blocklist_entry
from openwit.pipeline.stages.dedup import content_distance
from openwit.schemas.record import Record, drop


def matches(row: dict, urls: set, uids: set, domains: set) -> bool:
    """Whether a ledger row is named by the request. A domain covers its subdomains."""
    return Blocklist(uids, urls, domains).named(row["uid"], row["url"], row["page_url"]) is not None


def taken_down_row(row: dict, note: str) -> Record:
    """The superseding record: dropped at `takedown`, no longer in any shard."""
    was = f"; was {row['shard']}/{row['key']}" if row["status"] == "kept" else f"; was {row['status']}"
    return drop(ledger.to_record(row), "takedown", (note or "takedown request") + was).update(shard=None, key=None)


def recorded_config(out_dir: str):
    """The curate config OUT was made with (its staging, image and dedup settings), or None."""
    manifest = read_manifest(out_dir)
    return CurateConfig.from_dict(manifest["config"]) if manifest else None


def blocked_rows(out_dir: str, state: list, request: Blocklist, cfg) -> tuple[Blocklist, list]:
    """OUT's blocklist with this request added, and the current rows it takes down: those the
    request names, and kept samples of a picture a named candidate had (sha256, or pHash
    within the near-dup distance; docs/provenance.md, "Takedowns stay down")."""
    old = Blocklist.load(layout.blocklist_path(out_dir))
    named = [r for r in state if request.named(r["uid"], r["url"], r["page_url"])
             or (r["status"] == "kept" and old.named(r["uid"], r["url"], r["page_url"]))]
    blocklist = old.extended(request.uids, request.urls, request.domains, [blocklist_entry(r) for r in named])
    k = content_distance(cfg.near_dup_distance) if cfg else 0
    uids = {r["uid"] for r in named}
    same_picture = [r for r in state if r["uid"] not in uids and r["status"] == "kept"
                    and blocklist.row_content(r, k)]
    return blocklist, named + same_picture


def purge_staging(out_dir: str, cfg, removed: list, state: list) -> int:
    """Remove the removed candidates' receipts and staged images (the bytes openwit staged for
    them); an image a still-kept sample shares (same sha256) stays. -> files removed."""
    if cfg is None:
        return 0
    staging_dir = cfg.staging_dir or layout.staging_dir(out_dir)
    gone = {r["uid"] for r in removed}
    still_kept = {r["sha256"] for r in state if r["status"] == "kept" and r["uid"] not in gone}
    doomed = {layout.receipt(staging_dir, staging.receipt_key(r["url"], cfg.image, cfg.download))
              for r in removed if r["url"]}
    doomed |= {layout.staged_image(staging_dir, r["sha256"], r["image_format"]) for r in removed
               if r["sha256"] and r["image_format"] and r["sha256"] not in still_kept}
    present = sorted(path for path in doomed if files.exists(path))
    for path in present:
        files.remove(path)
    return len(present)


def rewrite_shards(shards_dir: str, by_shard: dict, show=None) -> dict:
    """Rewrite every shard that holds a removed sample (-> shard: samples left), with a
    progress display over them (`show`: progress.Options; None: none)."""
    sizes, removed = {}, 0
    with progress.LoopProgress("takedown", len(by_shard), show or progress.Options(quiet=True),
                               unit="shards") as shown:
        for shard, keys in sorted(by_shard.items()):
            sizes[shard] = shards.rewrite_shard(shards_dir, shard, keys)
            removed += len(keys)
            shown.advance(samples_removed=removed)
    return sizes


def takedown(out_dir: str, urls=(), uids=(), domains=(), note: str = "", show=None) -> dict:
    table = ledger.read_ledger(out_dir)
    state = ledger.current_state(table).to_pylist()
    cfg = recorded_config(out_dir)
    blocklist, named = blocked_rows(out_dir, state, Blocklist(uids, urls, domains), cfg)
    blocklist.save(layout.blocklist_path(out_dir))  # first: from now on every run applies it
    todo = [r for r in named if r["reason"] not in ("takedown", "taken_down")]
    recorded_at = utc_now()
    revision = ledger.next_revision(table)
    by_shard = {}
    for row in todo:
        if row["status"] == "kept":
            by_shard.setdefault(row["shard"], set()).add(row["key"])
    shards_dir = layout.shards_dir(out_dir)
    sizes = rewrite_shards(shards_dir, by_shard, show)
    shards.update_sizes(shards_dir, sizes)
    ledger.append_rows(out_dir, [taken_down_row(r, note) for r in todo], revision, recorded_at)
    purged = purge_staging(out_dir, cfg, named, state)
    result = {"at": recorded_at, "revision": revision, "named": len(named), "taken_down": len(todo),
              "samples_removed": sum(len(k) for k in by_shard.values()), "shards_rewritten": sorted(by_shard),
              "staged_files_removed": purged}
    update_manifest(out_dir, result)
    return result


def list_file(flag: str, path) -> list[str]:
    """The lines of a --urls/--uids/--domains file; a missing or unreadable one is a user error."""
    try:
        return lines_file(path)
    except FileNotFoundError:
        raise UserError(f"{flag} {path}: no such file; give the path of a file with one entry a line") from None
    except IsADirectoryError:
        raise UserError(f"{flag} {path}: is a folder; give the path of a file with one entry a line") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{flag} {path}: cannot be read ({err}); give a UTF-8 text file, one entry a line") from None


def main(argv=None) -> int:
    parser = OneLineParser(prog="openwit takedown", description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="output directory of openwit curate")
    parser.add_argument("--urls", help="file of image or page URLs, one a line")
    parser.add_argument("--uids", help="file of uids, one a line")
    parser.add_argument("--domains", help="file of domains (subdomains included), one a line")
    parser.add_argument("--note", default="", help="why (e.g. a ticket number); stored in each row's detail")
    progress.add_flags(parser)
    args = parser.parse_args(argv)
    if not (args.urls or args.uids or args.domains):
        parser.error("give --urls, --uids or --domains")
    show = progress.options_of(args)
    check_output_dir(args.dir, layout.ledger_dir(args.dir))
    urls, uids, domains = (list_file(flag, path) for flag, path in
                           (("--urls", args.urls), ("--uids", args.uids), ("--domains", args.domains)))
    result = takedown(args.dir, urls, uids, domains, args.note, show)
    print(json.dumps(result, indent=1))
    if not result["named"]:
        print("openwit takedown: nothing in the ledger matches", file=sys.stderr)
    return 0
