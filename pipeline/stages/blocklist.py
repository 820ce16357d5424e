"""The takedown blocklist: what `openwit takedown` removed from an OUT, so that it stays out.

`openwit takedown` writes it (OUT/.openwit/blocklist.json, output/layout.py) and every later
run on that OUT applies it with the reason `taken_down`: a restart of the same command,
`--retry-failed`, `--extend` and a new takedown. Two checks, both plain functions:
- `check_named`, right after read (nothing is downloaded for a blocked candidate): its uid,
  its image or page URL (normalised) named by a request, its image URL being one a removed
  candidate had, or its image or page host under a taken-down domain (subdomains included,
  so URLs of that domain seen for the first time are covered too);
- `check_content`, right after download: the original or stored sha256 of a removed image,
  or a near-duplicate of one by the dedup stage's rule (pHash within the near-dup distance,
  and close in colour where both have a colour signature): the same picture under another
  URL, resized or re-encoded, but not a recoloured graphic of the same layout.
"""
from __future__ import annotations

import json
from typing import Optional

from openwit.pipeline.common.urls import domain_host, host_of, normalize_url
from openwit.pipeline.output import files
from openwit.pipeline.stages.dedup import EvalHashes
from openwit.schemas.record import Record, drop

VERSION = 1
_LISTS = ("uids", "urls", "domains")  # what requests named; "images": what the named candidates were


class Blocklist:
    def __init__(self, uids=(), urls=(), domains=(), images=()):
        self.uids = set(uids)
        self.urls = {normalize_url(u) for u in urls}  # requested image or page URLs
        self.domains = {domain_host(d) for d in domains}
        self.images = list(images)  # one dict per removed candidate (blocklist_entry)
        self.image_urls = {i["normalized_url"] for i in self.images if i.get("normalized_url")}
        self.sha256s = {h for i in self.images for h in (i.get("sha256"), i.get("stored_sha256")) if h}
        # the nearest-hash search of decontamination, with the near-dup rule's colour check
        looks = sorted({(i["phash"], i.get("colour_sig") or "") for i in self.images if i.get("phash")})
        phashes = [phash for phash, _ in looks]
        self.phashes = EvalHashes(phashes, phashes, [colour for _, colour in looks])

    def __bool__(self) -> bool:
        return bool(self.uids or self.urls or self.domains or self.images)

    @classmethod
    def from_dict(cls, data: Optional[dict]) -> "Blocklist":
        data = data or {}
        return cls(*(data.get(name) or () for name in _LISTS), images=data.get("images") or ())

    @classmethod
    def load(cls, path: str) -> "Blocklist":
        return cls.from_dict(files.read_json(path))

    def to_dict(self) -> dict:
        return {"version": VERSION, "uids": sorted(self.uids), "urls": sorted(self.urls),
                "domains": sorted(self.domains), "images": sorted(self.images, key=lambda i: i["uid"])}

    def save(self, path: str) -> None:
        files.write_atomically(path, json.dumps(self.to_dict(), indent=1, sort_keys=True).encode("utf-8"))

    def extended(self, uids=(), urls=(), domains=(), images=()) -> "Blocklist":
        """This list plus a new request and the candidates it removed (an image once)."""
        known = {i["uid"] for i in self.images}
        new_images = [i for i in images if i["uid"] not in known]
        return Blocklist(self.uids | set(uids), self.urls | set(urls), self.domains | set(domains),
                         self.images + new_images)

    def named(self, uid: str, url: Optional[str], page_url: Optional[str]) -> Optional[str]:
        """Why a candidate is blocked by what it is called (None: it is not)."""
        if uid in self.uids:
            return f"uid {uid} was taken down"
        image_url, page = (normalize_url(u) if u else None for u in (url, page_url))
        hit = ({image_url, page} & self.urls) or ({image_url} & self.image_urls)
        if hit:
            return f"url {sorted(hit)[0]} was taken down"
        hosts = {host_of(url), host_of(page_url)} - {""}
        for host in sorted(hosts):
            for domain in sorted(self.domains):
                if host == domain or host.endswith("." + domain):
                    return f"host {host} is under the taken-down domain {domain}"
        return None

    def content(self, sha256: Optional[str], stored_sha256: Optional[str], phash: Optional[str],
                k: int, colour_sig: Optional[str] = None) -> Optional[str]:
        """Why an image is blocked by what it is (None: it is not)."""
        for value in (sha256, stored_sha256):
            if value and value in self.sha256s:
                return f"sha256 {value} is a taken-down image"
        nearest = self.phashes.nearest(phash, k, colour_sig) if phash else None  # ties: the first (sorted)
        if nearest is None:
            return None
        return f"phash {phash} at distance {nearest[1]} from taken-down {nearest[0]}"

    def row_content(self, row: dict, k: int) -> Optional[str]:
        """`content` of a ledger row (older ledgers have no colour_sig)."""
        return self.content(row["sha256"], row["stored_sha256"], row["phash"], k, row.get("colour_sig"))


def blocklist_entry(row: dict) -> dict:
    """What the blocklist keeps of one removed candidate (a ledger row)."""
    return {"uid": row["uid"], "url": row["url"], "normalized_url": normalize_url(row["url"]) if row["url"] else None,
            "page_url": row["page_url"], "sha256": row["sha256"], "stored_sha256": row["stored_sha256"],
            "phash": row["phash"], "colour_sig": row.get("colour_sig")}


def check_named(record: Record, blocklist: Blocklist) -> Record:
    why = blocklist.named(record.uid, record.url, record.page_url)
    return record if why is None else drop(record, "taken_down", why)


def check_content(record: Record, blocklist: Blocklist, k: int) -> Record:
    why = blocklist.content(record.sha256, record.stored_sha256, record.phash, k, record.colour_sig)
    return record if why is None else drop(record, "taken_down", why)
