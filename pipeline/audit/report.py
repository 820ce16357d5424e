"""`openwit audit report DIR -o report.html`: one self-contained static page (inline SVG
plots, images embedded as data URIs, no script and no network asset) built from the ledger,
manifest, stats and shards of an output directory. With an explorer (`audit explorer`, or
--explorer), its drop reasons and duplicate clusters link into the explorer's views."""
from __future__ import annotations

import base64
import html
import math
import os
from urllib.parse import urlencode

from openwit.pipeline.output import layout, ledger, shards
from openwit.pipeline.output.manifest import read_manifest
from openwit.pipeline.audit.explorer import parse_distances, staging_of
from openwit.pipeline.audit.summary import FUNNEL_COLUMNS, balancing_effect, language_counts, language_funnel
from openwit.pipeline.stages.match import list_for
from openwit.pipeline.stages.image import OUTPUT_FORMATS
from openwit.schemas.record import KEPT

WIDTH = 760
COLUMNS = ["uid", "revision", "status", "stage", "reason", "detail", "duplicate_of", "language", "original_width",
           "original_height", "caption", "url", "page_url", "shard", "key", "sha256", "image_format"]
# How many near-duplicate clusters the report shows as image strips, and members per strip.
STRIPS, STRIP_MEMBERS = 4, 7
STYLE = """body{font-family:sans-serif;max-width:820px;margin:2em auto;color:#222}
h2{margin-top:2em;border-bottom:1px solid #ccc}table{border-collapse:collapse}
td,th{padding:2px 10px;text-align:right}td:first-child,th:first-child{text-align:left}
.grid{display:grid;grid-template-columns:repeat(4,1fr);gap:10px}.grid figure{margin:0;font-size:12px}
.grid img{width:100%;image-rendering:auto}svg text{font-size:11px}
.strip{display:flex;gap:8px;overflow-x:auto;margin-bottom:1em}.strip figure{margin:0;width:110px;flex:none;font-size:11px}
.strip img{width:110px;border:2px solid transparent;box-sizing:border-box}.strip .survivor img{border-color:#6a9f58}"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def bar_chart(plot_id: str, items: list[tuple[str, int]], color: str = "#4a7fb5") -> str:
    """Horizontal bars, one per (label, value), the value printed at the bar's end."""
    top = max((v for _, v in items), default=0) or 1
    row, label_w, bar_w = 18, 170, WIDTH - 250
    bars = []
    for i, (label, value) in enumerate(items):
        y, w = i * row, bar_w * value / top
        bars.append(f'<g class="bar" data-label="{esc(label)}" data-value="{value}">'
                    f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{esc(label)}</text>'
                    f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 5}" fill="{color}"/>'
                    f'<text x="{label_w + w + 4:.1f}" y="{y + 13}">{value:,}</text></g>')
    return (f'<svg id="{plot_id}" class="plot" width="{WIDTH}" height="{row * len(items) + 6}" '
            f'xmlns="http://www.w3.org/2000/svg">{"".join(bars)}</svg>')


def log_position(value: float, low: float, high: float, size: float) -> float:
    span = math.log10(high) - math.log10(low) or 1.0
    return size * (math.log10(max(value, low)) - math.log10(low)) / span


def rank_plot(plot_id: str, series: dict, threshold: float) -> str:
    """Count by rank, both axes logarithmic (MetaCLIP's figure): each series is a list of
    counts; ranks are taken within each series, largest first."""
    w, h, left, bottom = WIDTH - 70, 300, 50, 30
    high = max((max(v, default=1) for v in series.values()), default=1) * 1.2
    ranks = max((len(v) for v in series.values()), default=1) + 1
    colors = ["#d1603d", "#4a7fb5", "#6a9f58"]
    parts = []
    for (name, counts), color in zip(series.items(), colors):
        ordered = sorted((c for c in counts if c > 0), reverse=True)
        points = " ".join(f"{left + log_position(r + 1, 1, ranks, w):.1f},"
                          f"{h - log_position(c, 0.8, high, h - bottom):.1f}" for r, c in enumerate(ordered))
        parts.append(f'<polyline class="series" data-series="{esc(name)}" points="{points}" fill="none" '
                     f'stroke="{color}" stroke-width="1.5"/>')
        parts.append(f'<text x="{left + w - 150}" y="{14 + 14 * len(parts) // 2}" fill="{color}">{esc(name)}</text>')
    y_t = h - log_position(threshold, 0.8, high, h - bottom)
    parts.append(f'<line x1="{left}" x2="{left + w}" y1="{y_t:.1f}" y2="{y_t:.1f}" stroke="#888" stroke-dasharray="4"/>'
                 f'<text x="{left + 4}" y="{y_t - 4:.1f}">t = {threshold:g}</text>')
    parts += log_ticks(left, h, w, h - bottom, ranks, high)
    parts.append(f'<line x1="{left}" x2="{left}" y1="0" y2="{h}" stroke="#444"/>'
                 f'<line x1="{left}" x2="{left + w}" y1="{h}" y2="{h}" stroke="#444"/>'
                 f'<text x="{left + w / 2}" y="{h + 24}">entry rank (log)</text>'
                 f'<text x="2" y="12">matches (log)</text>')
    return (f'<svg id="{plot_id}" class="plot" width="{WIDTH}" height="{h + 30}" '
            f'xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>')


def log_ticks(left: float, h: float, w: float, height: float, ranks: float, high: float) -> list[str]:
    """Labels at the powers of ten on both log axes."""
    ticks = []
    for power in range(0, int(math.log10(ranks)) + 1):
        x = left + log_position(10 ** power, 1, ranks, w)
        ticks.append(f'<text x="{x:.1f}" y="{h + 12}" text-anchor="middle">{10 ** power:,}</text>')
    for power in range(0, int(math.log10(high)) + 1):
        y = h - log_position(10 ** power, 0.8, high, height)
        ticks.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{10 ** power:,}</text>')
    return ticks


def size_bins(rows: list[dict]) -> list[tuple[str, int]]:
    """Kept images by the shorter side of the original, in power-of-two bins."""
    bins = {}
    for row in rows:
        if row["status"] == KEPT and row["original_width"] and row["original_height"]:
            side = min(row["original_width"], row["original_height"])
            low = 2 ** int(math.log2(side))
            bins[low] = bins.get(low, 0) + 1
    return [(f"{low}-{2 * low - 1} px", n) for low, n in sorted(bins.items())]


def sample_cards(out_dir: str, kept: dict, limit: int = 24) -> str:
    """The first samples of the shards, embedded, with captions and source links."""
    cards = []
    for path in shards.tar_paths(layout.shards_dir(out_dir)):
        if len(cards) >= limit:
            break
        for key, ext, _, data in shards.tar_members(path):
            if ext in OUTPUT_FORMATS and key in kept and len(cards) < limit:
                cards.append(card(key, ext, data.read(), kept[key]))
    return f'<div id="samples" class="grid">{"".join(cards)}</div>'


def card(key: str, ext: str, data: bytes, row: dict) -> str:
    mime = {"jpg": "jpeg"}.get(ext, ext)
    link = row["page_url"] or row["url"]
    return (f'<figure class="sample" data-key="{esc(key)}"><img alt="{esc(row["caption"])}" '
            f'src="data:image/{mime};base64,{base64.b64encode(data).decode()}"/>'
            f'<figcaption>{esc(row["caption"])}<br/><a href="{esc(link)}" rel="nofollow">source page</a>'
            f'</figcaption></figure>')


def funnel_table(steps: list[tuple[str, int]]) -> str:
    total = steps[0][1] or 1
    rows = "".join(f'<tr data-step="{esc(s)}"><td>{esc(s)}</td><td class="count">{n}</td>'
                   f'<td>{100 * n / total:.1f}%</td></tr>' for s, n in steps)
    return f'<table id="funnel-table"><tr><th>step</th><th>remaining</th><th>share</th></tr>{rows}</table>'


def language_table(state, balance: dict, top: int = 30) -> str:
    """The funnel per language ID; with a worldwide run, each language's t and tail share."""
    by_language = balance.get("languages") or {}
    extra = ["t", "tail share"] if by_language else []
    head = "".join(f"<th>{esc(name)}</th>" for name in ["language", *FUNNEL_COLUMNS, *extra])
    rows = []
    for language, row in language_funnel(state)[:top]:
        cells = [esc(language)] + [f"{row[name]:,}" for name in FUNNEL_COLUMNS]
        if by_language:
            entry = by_language.get(list_for(language, by_language))
            cells += [f"{entry['threshold']:,}", f"{entry['tail_share']:.1%}"] if entry else ["-", "-"]
        rows.append(f'<tr data-language="{esc(language)}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f'<table id="language-table"><tr>{head}</tr>{"".join(rows)}</table>'


def build_report(out_dir: str, explorer=None) -> str:
    """The page; `explorer`: the explorer's index.html as the report links to it (or None)."""
    state = ledger.current_state(ledger.read_ledger(out_dir, columns=COLUMNS))
    rows = state.to_pylist()
    kept = {r["key"]: r for r in rows if r["status"] == KEPT}
    steps = ledger.funnel(state)
    manifest = read_manifest(out_dir)
    reasons = ledger.drop_reasons(state)
    sections = [
        f"<h1>openwit report</h1><p>{esc(out_dir)} &middot; openwit {esc(manifest.get('openwit_version'))} &middot; "
        f"seed {esc(manifest.get('seed'))} &middot; vocabulary sha256 {esc(manifest['vocab']['sha256'][:16])}…</p>",
        explorer_note(explorer),
        "<h2>Funnel</h2>", bar_chart("plot-funnel", steps), funnel_table(steps),
        "<h2>Drop reasons</h2>",
        bar_chart("plot-reasons", [(f"{s}: {r}", n) for s, r, n in reasons], "#d1603d"),
        reason_links(reasons, explorer),
        "<h2>Languages</h2>", bar_chart("plot-languages", [(lang, n) for lang, n, _ in language_counts(state)[:15]]),
        language_table(state, balancing_effect(out_dir)[0]),
        "<h2>Image sizes (kept, shorter side of the original)</h2>",
        bar_chart("plot-sizes", size_bins(rows), "#6a9f58"),
    ]
    sections += balancing_section(out_dir)
    sections += duplicate_strips(out_dir, manifest, rows, explorer)
    sections += ["<h2>Samples</h2>", sample_cards(out_dir, kept)]
    body = "\n".join(sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"/><title>openwit report</title>'
            f"<style>{STYLE}</style></head><body>{body}</body></html>")


def explorer_link(explorer: str, **state) -> str:
    """A link to one view of the explorer (its state lives in the URL's hash)."""
    return f"{explorer}#{urlencode(state)}"


def explorer_note(explorer) -> str:
    if not explorer:
        return ""
    return (f'<p id="explorer-link">Browse every candidate, kept or dropped, and why: '
            f'<a href="{esc(explorer)}">the explorer</a>.</p>')


def reason_links(reasons: list, explorer) -> str:
    if not explorer:
        return ""
    items = "".join(f'<li><a class="reason-link" data-reason="{esc(r)}" href="{esc(explorer_link(explorer, view="dropped", reason=r))}">'
                    f"{esc(s)}: {esc(r)}</a> ({n:,})</li>" for s, r, n in reasons)
    return f'<ul id="reason-links">{items}</ul>'


def shard_images(out_dir: str, wanted: set) -> dict:
    """(shard, key) -> (extension, bytes) of the wanted samples, reading only their shards."""
    found = {}
    for shard in sorted({shard for shard, _ in wanted}):
        path = layout.shard_tar(layout.shards_dir(out_dir), shard)
        if not os.path.exists(path):
            continue
        for key, ext, _, data in shards.tar_members(path):
            if (shard, key) in wanted and ext in OUTPUT_FORMATS:
                found[(shard, key)] = (ext, data.read())
    return found


def image_tag(ext: str, data: bytes, alt: str) -> str:
    mime = {"jpg": "jpeg"}.get(ext, ext)
    return f'<img alt="{esc(alt)}" src="data:image/{mime};base64,{base64.b64encode(data).decode()}"/>'


def duplicate_strips(out_dir: str, manifest: dict, rows: list, explorer) -> list[str]:
    """The largest near-duplicate clusters as image strips: the survivor and its duplicates
    with their distances, so a person can judge whether each is really one picture. Images
    come from the shards (kept) or staging (dropped, while staging still holds them)."""
    by_uid = {r["uid"]: r for r in rows}
    clusters = {}
    for r in rows:
        if r["reason"] == "near_duplicate" and r["duplicate_of"] in by_uid:
            clusters.setdefault(r["duplicate_of"], []).append(r)
    chosen = sorted(clusters.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:STRIPS]
    if not chosen:
        return []
    images = shard_images(out_dir, {(by_uid[uid]["shard"], by_uid[uid]["key"]) for uid, _ in chosen
                                    if by_uid[uid]["status"] == KEPT})
    staging = staging_of(out_dir, manifest)
    strips = ["<h2>Near-duplicate clusters</h2>",
              f"<p>The {len(chosen)} largest of {len(clusters):,}: the survivor (green) and up to "
              f"{STRIP_MEMBERS} candidates dropped as its near duplicates, with their distances.</p>"]
    for uid, members in chosen:
        survivor = by_uid[uid]
        fate = "kept" if survivor["status"] == KEPT else f"later dropped: {survivor['reason']}"
        figures = [figure("survivor", staging, survivor, images, f"survivor ({fate})")]
        for member in sorted(members, key=lambda m: (parse_distances(m["detail"]).get("phash", 0), m["uid"]))[:STRIP_MEMBERS]:
            figures.append(figure("member", staging, member, images, parse_distances_text(member["detail"])))
        title = f"{esc(uid)}: {len(members)} near duplicate(s)"
        if explorer:
            title = f'<a href="{esc(explorer_link(explorer, view="clusters", cluster=uid))}">{title}</a>'
        strips.append(f'<h3>{title}</h3><div class="strip" data-survivor="{esc(uid)}">{"".join(figures)}</div>')
    return strips


def figure(role: str, staging: str, row: dict, shard_images_found: dict, text: str) -> str:
    """One picture of a strip: a kept sample's from its shard, else its staged image."""
    picture = "no image"
    if (row["shard"], row["key"]) in shard_images_found:
        picture = image_tag(*shard_images_found[(row["shard"], row["key"])], row["caption"])
    elif row["sha256"] and row["image_format"]:
        path = layout.staged_image(staging, row["sha256"], row["image_format"])
        if os.path.exists(path):
            with open(path, "rb") as f:
                picture = image_tag(row["image_format"], f.read(), row["caption"])
    return (f'<figure class="{role}" data-uid="{esc(row["uid"])}">{picture}'
            f'<figcaption>{esc(text)}</figcaption></figure>')


def parse_distances_text(detail) -> str:
    return ", ".join(f"{name} distance {value}" for name, value in parse_distances(detail).items()) or (detail or "")


def balancing_section(out_dir: str) -> list[str]:
    effect, entries = balancing_effect(out_dir)
    if not effect:
        return []
    series = {"matches in the pool": [e["matches_in_pool"] for e in entries],
              "kept in the shards": [e["kept_final"] for e in entries]}
    return ["<h2>Balancing: matches per entry before and after</h2>",
            f"<p>t = {effect['threshold']:,} ({esc(effect['rule'])}); tail share {effect['tail_share']:.1%}; "
            f"{effect['entries_over_threshold']:,} entries over t in the pool, "
            f"{effect['entries_at_cap_final']:,} at t in the shards.</p>",
            rank_plot("plot-entries", series, effect["threshold"])] + language_balancing(effect)


def language_balancing(effect: dict) -> list[str]:
    """A worldwide run's t per language list (MetaCLIP 2: equal tail shares)."""
    if not effect.get("languages"):
        return []
    head = "".join(f"<th>{name}</th>" for name in ("list", "t", "tail share", "matches in the pool",
                                                    "entries matched", "over t", "matches kept"))
    rows = "".join(
        f'<tr data-list="{esc(language)}"><td>{esc(language)}</td><td>{e["threshold"]:,}</td>'
        f'<td>{e["tail_share"]:.1%}</td><td>{e["matches_in_pool"]:,}</td><td>{e["entries_matched"]:,}</td>'
        f'<td>{e["entries_over_threshold"]:,}</td><td>{e.get("matches_kept_final", 0):,}</td></tr>'
        for language, e in sorted(effect["languages"].items(), key=lambda item: -item[1]["matches_in_pool"]))
    return [f"<p>Per language: each list's t gives it English's tail share "
            f"({effect['tail_share_target']:.1%} at t = {effect['threshold']:,}).</p>",
            f'<table id="language-balancing"><tr>{head}</tr>{rows}</table>']


def write_report(out_dir: str, output: str, explorer=None) -> None:
    page = build_report(out_dir, explorer)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        f.write(page)
