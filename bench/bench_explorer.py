"""`openwit audit explorer` at 100K and 1M candidates: writing time, the writer's peak RSS,
and how fast the page opens, filters, searches and shows duplicate clusters in headless
chromium (issue 22; docs/explorer.md).

The ledgers are synthesised (`synthesize`): 30% kept, eleven drop reasons, a caption of 4-12
words from a 300-word list, 1-3 of 5,000 vocabulary entries per candidate, 12% of the
candidates dropped as duplicates of a kept one (clusters of 1 to dozens), a stats/entries.parquet
and a manifest. No shards, so no thumbnails (bench_pipeline's outputs have them: pass one
with --out). Each write runs in its own process, which reports VmHWM
(openwit.pipeline.common.memory.peak_rss_bytes), without the report page (`audit report`
is another module with its own cost).

    python bench/bench_explorer.py [--sizes 100000,1000000] [--keep DIR] [--screenshots DIR]
    python bench/bench_explorer.py --out OUT_FROM_BENCH_PIPELINE [--keep DIR] [--screenshots DIR]

The 1M size takes several minutes on two shared cores (it writes ~1,000 rows files and
100 caption files). `--no-browser` skips chromium.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
PARTS = 16
KEPT_SHARE = 0.30
# drop reasons (stage, reason, share of all candidates); duplicates are placed separately
DROPS = [("read", "malformed_row", 0.01), ("text", "caption_too_short", 0.05), ("text", "language_not_allowed", 0.04),
         ("match", "unmatched", 0.18), ("balance_pre", "balanced_out_pre", 0.08), ("download", "http_404", 0.06),
         ("download", "timeout", 0.03), ("image", "decode_error", 0.02), ("balance_final", "balanced_out_final", 0.01)]
DUPLICATES = [("url_dedup", "duplicate_url", 0.03), ("dedup", "duplicate_image", 0.02), ("dedup", "near_duplicate", 0.07)]
LANGUAGES = ["en"] * 14 + ["de", "de", "fr", "fr", "es", "it", "pt", "nl", "ja", "zh", "ru", "pl", None]
N_ENTRIES = 5000
SAMPLES_PER_SHARD = 10000
WORDS = ("red blue green small large old new wooden metal glass stone river mountain city street house garden "
         "window door table chair lamp book cup plate bowl bottle flower tree leaf forest beach sea boat ship car "
         "bicycle train station bridge tower castle church market shop bakery bread cheese apple orange lemon "
         "banana grape cherry cake coffee tea milk water wine dog cat bird horse cow sheep goat fish bear fox "
         "rabbit mouse owl eagle duck swan frog snake turtle butterfly bee spider child man woman family friend "
         "teacher student doctor farmer painter singer dancer player team game ball field park road path hill "
         "valley lake island desert snow rain sun moon star cloud sky night morning evening summer winter spring "
         "autumn holiday wedding party dinner lunch breakfast kitchen bedroom bathroom office school library "
         "museum gallery theatre concert festival parade portrait landscape sketch drawing painting photo poster "
         "map sign logo pattern texture fabric dress shirt shoe hat coat bag watch ring necklace camera phone "
         "computer screen keyboard robot machine engine tool hammer knife spoon fork basket box candle clock "
         "mirror carpet curtain pillow blanket sofa shelf stairs roof wall fence gate tent cabin farm barn "
         "harbour airport plane rocket planet galaxy cave waterfall volcano glacier canyon meadow vineyard "
         "orchard pond fountain statue monument ruin temple palace village town").split()


def uid_of(i: int) -> str:
    return hashlib.sha256(f"synthetic\x00{i}".encode()).hexdigest()[:20]


def fates(n: int, rng) -> tuple[np.ndarray, list]:
    """A fate index per candidate: 0 kept, k >= 1 the k-th of DROPS + DUPLICATES."""
    kinds = [("", "", KEPT_SHARE)] + DROPS + DUPLICATES
    shares = np.array([k[2] for k in kinds])
    return rng.choice(len(kinds), size=n, p=shares / shares.sum()), kinds


def synthesize(out: str, n: int, seed: int = 0, parts: int = PARTS) -> None:
    """A ledger of n candidates (`parts` Parquet parts, one revision), entries stats and a
    manifest, under out. Generated part by part."""
    from openwit.pipeline.output import layout

    rng = np.random.default_rng(seed)
    fate, kinds = fates(n, rng)
    kept_rows = np.flatnonzero(fate == 0)
    kept_number = np.full(n, -1)
    kept_number[kept_rows] = np.arange(len(kept_rows))
    # duplicates point at a kept row; survivors drawn Zipf-like so cluster sizes vary
    # (skewed towards the first kept rows: a few dozen members at most, most clusters of 1-2)
    survivor = kept_rows[(len(kept_rows) * rng.random(n) ** 1.5).astype(np.int64)]
    entries = np.minimum(rng.zipf(1.4, size=(n, 3)), N_ENTRIES) - 1
    n_entries = rng.integers(1, 4, size=n)
    words = rng.integers(0, len(WORDS), size=(n, 12))
    n_words = rng.integers(4, 13, size=n)
    language = rng.integers(0, len(LANGUAGES), size=n)
    sides = rng.integers(64, 2048, size=(n, 2))
    ledger_dir = layout.ledger_dir(out)
    os.makedirs(ledger_dir, exist_ok=True)
    from openwit.schemas.record import LEDGER_SCHEMA

    matches = np.zeros(N_ENTRIES, dtype=np.int64)
    kept_per_entry = np.zeros(N_ENTRIES, dtype=np.int64)
    for part in range(parts):
        rows = []
        for i in range(part, n, parts):
            f = int(fate[i])
            stage, reason, _ = kinds[f]
            downloaded = f == 0 or stage in ("image", "dedup", "balance_final")
            ids = sorted({int(e) for e in entries[i, :n_entries[i]]}) if stage not in ("read", "text") else []
            matches[ids] += 1
            row = {"revision": 0, "uid": uid_of(i), "url": f"https://img{i % 97}.example.org/{i}.jpg",
                   "caption": " ".join(WORDS[w] for w in words[i, :n_words[i]]),
                   "source": f"candidates-{i // 100000:03d}.parquet:{i % 100000}", "page_url": f"https://example.org/page/{i}",
                   "status": "kept" if f == 0 else "dropped", "language": LANGUAGES[language[i]],
                   "language_score": 0.9, "entry_ids": ids or None,
                   "stage": stage or None, "reason": reason or None, "detail": None, "duplicate_of": None}
            if reason in ("duplicate_url", "duplicate_image", "near_duplicate"):
                row["duplicate_of"] = uid_of(int(survivor[i]))
                distance = int(rng.integers(0, 9))
                row["detail"] = (f"phash {i:016x} at distance {distance} from {int(survivor[i]):016x} of {row['duplicate_of']}"
                                 if reason == "near_duplicate" else f"same {'url' if reason == 'duplicate_url' else 'bytes'} as {row['duplicate_of']}")
            elif reason == "http_404":
                row["detail"], row["http_status"] = "HTTP 404", 404
            if downloaded:
                row.update(sha256=hashlib.sha256(str(i).encode()).hexdigest(), image_format="jpeg",
                           original_width=int(sides[i, 0]), original_height=int(sides[i, 1]), phash=f"{i:016x}")
            if f == 0:
                k = int(kept_number[i])
                row.update(shard=f"{k // SAMPLES_PER_SHARD:05d}", key=f"{k:09d}", width=256, height=256, clip_score=0.31)
                kept_per_entry[ids] += 1
            rows.append(row)
        rows.sort(key=lambda r: r["uid"])
        table = pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA)
        pq.write_table(table, layout.ledger_part_path(ledger_dir, part, 0))
    stats = pa.table({"entry_id": pa.array(np.arange(N_ENTRIES), pa.int32()),
                      "entry": [f"entry {WORDS[e % len(WORDS)]} {e}" for e in range(N_ENTRIES)],
                      "matches_in_pool": matches, "kept_pre_balance": kept_per_entry + matches // 3,
                      "kept_final": kept_per_entry})
    os.makedirs(os.path.dirname(layout.entry_stats_path(out)), exist_ok=True)
    pq.write_table(stats, layout.entry_stats_path(out))
    manifest = {"seed": seed, "openwit_version": "synthetic", "started_at": "2026-01-01T00:00:00Z",
                "finished_at": "2026-01-01T01:00:00Z", "funnel": {"candidates": n, "kept": int(len(kept_rows))}}
    with open(layout.manifest_path(out), "w", encoding="utf-8") as f:
        json.dump(manifest, f)


def child(out: str, target: str) -> None:
    """One explorer write (no report); prints its seconds, peak RSS and counts as JSON."""
    from openwit.pipeline.audit.explorer import write_explorer
    from openwit.pipeline.common.memory import peak_rss_bytes

    start = time.perf_counter()
    counts = write_explorer(out, target, with_report=False)
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_bytes": peak_rss_bytes(), **counts}))


def write_in_child(out: str, target: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", out, target], check=True, capture_output=True,
                            text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def browse(target: str, profile: str, screenshots=None, tag: str = "") -> dict:
    """Open the explorer in headless chromium; -> seconds for open, filter, search, clusters."""
    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    from test_explorer import Browser, choose, type_in

    browser = Browser(profile)
    try:
        browser.send("Emulation.setDeviceMetricsOverride", {"width": 1400, "height": 1000, "deviceScaleFactor": 1,
                                                            "mobile": False}, session=browser.session)
        times = {}

        def timed(name, action):
            start = time.perf_counter()
            action()
            times[name] = time.perf_counter() - start

        timed("open", lambda: browser.open("file://" + os.path.join(os.path.abspath(target), "index.html")))
        meta = browser.evaluate("app.meta")
        shot(browser, screenshots, f"explorer{tag}-kept.png")
        timed("dropped", lambda: browser.act("document.querySelector('a[data-view=dropped]').click()"))
        reason = max(meta["reasons"], key=lambda r: r["count"])["name"]
        timed("filter", lambda: browser.act(choose("reason", reason)))
        shot(browser, screenshots, f"explorer{tag}-dropped.png")
        languages = meta["languages"]
        if len(languages) > 1:
            timed("language", lambda: browser.act(choose("lang", languages[1])))
        browser.act("document.querySelector('a[data-view=kept]').click()")
        caption = browser.evaluate("(async () => (await rows([0]))[0].caption)()")
        word = max(caption.split(), key=len)  # a word of the first kept caption: it has hits
        timed("search", lambda: browser.act(type_in("q", word)))
        timed("search_again", lambda: browser.act(type_in("q", word[:-1])))
        shot(browser, screenshots, f"explorer{tag}-search.png")
        timed("clusters", lambda: browser.act("document.querySelector('a[data-view=clusters]').click()"))
        if meta["clusters"]:
            timed("cluster_page", lambda: browser.act("document.querySelector('.pager button:last-child').click()"))
            shot(browser, screenshots, f"explorer{tag}-clusters.png")
            timed("cluster_open", lambda: browser.act("document.querySelector('.cluster h3').click()"))
        shot(browser, screenshots, f"explorer{tag}-cluster.png")
        times["heap_mb"] = browser.evaluate("performance.memory ? performance.memory.usedJSHeapSize / 2**20 : null")
        if browser.errors:
            raise RuntimeError(f"console errors: {browser.errors[:3]}")
        return times
    finally:
        browser.close()


def shot(browser, folder, name) -> None:
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    # thumbnails in view load lazily: wait for them (at most 5 s) so the picture shows them
    browser.evaluate("(async () => { for (let k = 0; k < 500; k++) { if ([...document.images].every(i => "
                     "i.complete || i.loading === 'lazy' && i.getBoundingClientRect().top > innerHeight)) break; "
                     "await new Promise(r => setTimeout(r, 10)); } return true; })()")
    data = browser.send("Page.captureScreenshot", {"format": "png"}, session=browser.session)["data"]
    with open(os.path.join(folder, name), "wb") as f:
        f.write(base64.b64decode(data))


def measure(label: str, out: str, root: str, args) -> dict:
    target = os.path.join(root, f"explorer-{label}")
    row = {"size": label, **write_in_child(out, target)}
    print(f"  {label}: written in {row['seconds']:.1f} s, peak RSS {row['peak_bytes'] / 2**20:.0f} MiB",
          file=sys.stderr)
    if not args.no_browser:
        row.update(browse(target, os.path.join(root, f"profile-{label}"), args.screenshots, f"-{label}"))
    return row


def print_table(rows: list[dict]) -> None:
    print(f"{'candidates':>12} {'write s':>8} {'peak RSS MiB':>12} {'open s':>7} {'filter s':>8} {'search s':>8} "
          f"{'again s':>7} {'clusters s':>10} {'cluster s':>9}")
    for r in rows:
        def t(name):
            return f"{r[name]:.2f}" if name in r else "-"
        print(f"{r['candidates']:>12,} {r['seconds']:>8.1f} {r['peak_bytes'] / 2**20:>12.0f} {t('open'):>7} "
              f"{t('filter'):>8} {t('search'):>8} {t('search_again'):>7} {t('clusters'):>10} {t('cluster_open'):>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--out", help="an existing OUT (e.g. bench_pipeline --keep DIR: DIR/out-100000) instead")
    parser.add_argument("--keep", metavar="DIR", help="keep ledgers and explorers under DIR")
    parser.add_argument("--screenshots", metavar="DIR", help="save screenshots there")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--browse", metavar="DIR", help="only time and screenshot an explorer already written")
    parser.add_argument("--child", nargs=2, metavar=("OUT", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.browse:
        with tempfile.TemporaryDirectory() as profile:
            print(json.dumps(browse(args.browse, profile, args.screenshots, "-" + os.path.basename(args.browse))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or scratch
        os.makedirs(root, exist_ok=True)
        if args.out:
            rows.append(measure("out", args.out, root, args))
        else:
            for n in sorted(int(s) for s in args.sizes.split(",")):
                out = os.path.join(root, f"ledger-{n}")
                if not os.path.isdir(os.path.join(out, "ledger")):
                    start = time.perf_counter()
                    synthesize(out, n)
                    print(f"  synthesised {n:,} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
                rows.append(measure(f"{n // 1000}k", out, root, args))
    print_table(rows)


if __name__ == "__main__":
    main()
